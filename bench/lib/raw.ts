/**
 * The peers v86box is measured against, booted from the same bundled image with another
 * init (`init=/usr/lib/v86box/bench-init v86box.bench=…`, image/skel/usr/lib/v86box/):
 *
 *   serial-shell  an interactive bash on ttyS0, driven by writing a command and scraping
 *                 the output up to the next prompt (the seed project's approach)
 *   virtio-echo   `cat` echoing the virtio console's port 0 (the channel's round trip), and
 *                 a flood of N bytes on its port 1 when N is written to it (its throughput)
 *
 * These run v86 in this process, with nothing between the emulator and the measurement.
 */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { V86 } from "v86"
import { bundledRootDiskPath } from "./rootDisk.ts"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const assets = join(root, "assets")
const wasmPath = join(dirname(createRequire(import.meta.url).resolve("v86")), "v86.wasm")

interface Manifest {
  readonly memoryMB: number
  readonly cmdline: string
  readonly files: Record<string, { readonly path: string }>
}

const arrayBuffer = (path: string): ArrayBuffer => {
  const bytes = readFileSync(path)
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer
}

export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

const benchInit = "/usr/lib/v86box/bench-init"

/** The longest a peer may take to answer one step (a command, an echo, a flood): minutes, not forever. */
const stepTimeoutMs = 300_000

/** The image's command line without its own choice of init. */
const withoutInit = (cmdline: string) =>
  cmdline.split(/\s+/).filter((word) => !word.startsWith("init=") && !word.startsWith("rdinit=")).join(" ")

/** The prompt the serial shell prints: unlikely in any command's output. */
const PROMPT = "__v86p__$ "

export interface RawMachine {
  /** Types `command` on the serial shell; resolves with what it printed before the next prompt. */
  readonly serialCommand: (command: string) => Promise<string>
  /** One byte to the guest's echo and back. */
  readonly virtioRoundTrip: () => Promise<void>
  /** Asks the guest for `bytes` bytes on the console's port 1; resolves when they all arrived. */
  readonly virtioFlood: (bytes: number) => Promise<void>
  readonly destroy: () => Promise<void>
}

export type BenchMode = "serial-shell" | "virtio-echo"

/** Boots the bundled image in bench mode; resolves once the peer is ready for input. */
export const bootRawMachine = async (mode: BenchMode, timeoutMs = 60_000): Promise<RawMachine> => {
  const manifest: Manifest = JSON.parse(readFileSync(join(assets, "manifest.json"), "utf8"))
  // The root disk ships compressed: this is the disk the SDK unpacks it to.
  const hda = manifest.files.rootfs === undefined ? undefined : { buffer: arrayBuffer(await bundledRootDiskPath()) }
  return new Promise((resolveBoot, rejectBoot) => {
    const file = (key: string) => ({ buffer: arrayBuffer(join(assets, manifest.files[key]!.path)) })
    // The typings lack the bus and the extra virtio console ports that v86 has at run time.
    const emulator: any = new V86({
      wasm_path: wasmPath,
      memory_size: manifest.memoryMB * 1024 * 1024,
      vga_memory_size: 2 * 1024 * 1024,
      bios: file("bios"),
      vga_bios: file("vgaBios"),
      bzimage: file("kernel"),
      ...(manifest.files.initrd === undefined ? {} : { initrd: file("initrd") }),
      ...(hda === undefined ? {} : { hda }),
      cmdline: `${withoutInit(manifest.cmdline)} rdinit=${benchInit} init=${benchInit} v86box.bench=${mode}`,
      virtio_console: true,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true
    } as never)

    let serial = ""
    let serialWaiter: ((text: string) => void) | undefined
    const serialDecoder = new TextDecoder()
    emulator.add_listener("serial0-output-byte", (byte: number) => {
      serial += serialDecoder.decode(Uint8Array.of(byte), { stream: true })
      const end = serial.indexOf(PROMPT)
      if (end !== -1 && serialWaiter !== undefined) {
        const waiter = serialWaiter
        serialWaiter = undefined
        const output = serial.slice(0, end)
        serial = serial.slice(end + PROMPT.length)
        waiter(output)
      }
    })
    const untilPrompt = () => new Promise<string>((resolvePrompt) => (serialWaiter = resolvePrompt))

    let echoWaiter: (() => void) | undefined
    emulator.add_listener("virtio-console0-output-bytes", () => {
      const waiter = echoWaiter
      echoWaiter = undefined
      waiter?.()
    })
    let flood = { expected: 0, received: 0, done: undefined as (() => void) | undefined }
    emulator.add_listener("virtio-console1-output-bytes", (bytes: Uint8Array) => {
      flood.received += bytes.length
      if (flood.received >= flood.expected) flood.done?.()
    })

    /**
     * An answer the peer owes, bounded: a byte the guest never echoes (a generic port
     * drops what arrives while nobody has it open, which is why bench-init opens its
     * ports before it says ready) fails the run, naming the step, instead of hanging the
     * benchmark.
     */
    const answered = <A>(step: string, answer: Promise<A>): Promise<A> => {
      let timer: ReturnType<typeof setTimeout> | undefined
      const late = new Promise<never>((_, rejectLate) => {
        timer = setTimeout(
          () => rejectLate(new Error(`bench mode ${mode}: no answer to ${step} in ${stepTimeoutMs} ms:\n${serial.slice(-2000)}`)),
          stepTimeoutMs
        )
      })
      return Promise.race([answer, late]).finally(() => clearTimeout(timer))
    }

    const machine: RawMachine = {
      serialCommand: (command) => {
        const output = untilPrompt()
        for (const byte of new TextEncoder().encode(`${command}\n`)) emulator.serial0_send(String.fromCharCode(byte))
        return answered(`the serial command "${command}"`, output.then((text) => text.slice(text.indexOf("\n") + 1)))
      },
      virtioRoundTrip: () =>
        answered(
          "a 1-byte echo",
          new Promise<void>((resolveEcho) => {
            echoWaiter = resolveEcho
            emulator.bus.send("virtio-console0-input-bytes", Uint8Array.of(0x2e))
          })
        ),
      virtioFlood: (bytes) =>
        answered(
          `a flood of ${bytes} bytes`,
          new Promise<void>((resolveFlood) => {
            flood = { expected: bytes, received: 0, done: resolveFlood }
            emulator.bus.send("virtio-console1-input-bytes", new TextEncoder().encode(`${bytes}\n`))
          })
        ),
      destroy: () => emulator.destroy()
    }

    const timer = setTimeout(() => {
      void emulator.destroy()
      rejectBoot(new Error(`bench mode ${mode} did not become ready in ${timeoutMs} ms:\n${serial.slice(-2000)}`))
    }, timeoutMs)
    const ready = () => {
      clearTimeout(timer)
      resolveBoot(machine)
    }
    if (mode === "serial-shell") {
      void untilPrompt().then(ready)
    } else {
      // The guest prints this on ttyS0 once cat and the flood listener run.
      const poll = setInterval(() => {
        if (serial.includes("v86box: bench ready")) {
          clearInterval(poll)
          ready()
        }
      }, 5)
    }
  })
}
