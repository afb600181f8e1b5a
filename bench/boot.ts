/**
 * Cold-boot benchmark for the bundled guest image (npm run bench:boot).
 *
 * Boots assets/ (as described by assets/manifest.json) in v86 in this process, N times
 * one after another, and prints the median wall time from `new V86()` to
 *   - the `v86box: init ready` line on the serial console (ttyS0), and
 *   - the agent's READY frame on the virtio console (bytes 0x56 0xBB 0x80), if an agent
 *     is installed,
 * plus the kernel's own timeline (printk timestamps) with its slowest steps.
 *
 * Options (all optional):
 *   --runs N           number of cold boots (default 5)
 *   --memory MB        guest RAM (default: manifest memoryMB)
 *   --cmdline "..."    kernel command line (default: manifest cmdline)
 *   --append "..."     appended to the command line
 *   --kernel PATH / --initrd PATH / --hda PATH / --bios PATH   other images (experiments)
 *   --no-initrd        boot without an initrd
 *   --use-initrd       boot the manifest's initrd (files.initrd) instead of its disk (files.rootfs)
 *   --timeout S        per-boot timeout in seconds (default 60)
 *   --log              print the first boot's serial log
 *   --trace            print the timeline boot's serial log with host wall time and guest
 *                      instructions (millions) at each line's arrival
 *   --no-timeline      skip the extra loglevel=8 boot that prints the kernel timeline
 *   --firmware F       "direct" (default, as the SDK boots: no BIOS) or "seabios"
 *   --jit HOW          how guest code modules get compiled: "thread" (default, as the SDK
 *                      does: optimized, on a compiler thread, src/internal/guestCode.mjs),
 *                      "here" (on the emulator's thread, V8's defaults) or "v86" (v86's own
 *                      asynchronous compile)
 */
import { readFileSync, statSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { parseArgs } from "node:util"
import { V86 } from "v86"
import { directBoot } from "../src/internal/directBoot.mjs"
import { FileDisk } from "../src/internal/fileDisk.mjs"
import { deviceOptions, removeCdromDrive } from "../src/internal/machineDevices.mjs"
import { bundledRootDiskPath } from "./lib/rootDisk.ts"
import { compileGuestCode } from "../src/internal/guestCode.mjs"
import * as GuestCodeCompiler from "../src/internal/guestCodeCompiler.ts"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..")
const assets = join(root, "assets")
const require = createRequire(import.meta.url)
const wasmPath = join(dirname(require.resolve("v86")), "v86.wasm")
const wasmModule = await WebAssembly.compile(readFileSync(wasmPath))

const { values: opt } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    memory: { type: "string" },
    cmdline: { type: "string" },
    append: { type: "string" },
    kernel: { type: "string" },
    bios: { type: "string" },
    "no-vga-bios": { type: "boolean", default: false },
    initrd: { type: "string" },
    hda: { type: "string" },
    "no-initrd": { type: "boolean", default: false },
    "use-initrd": { type: "boolean", default: false },
    timeout: { type: "string", default: "60" },
    log: { type: "boolean", default: false },
    "no-timeline": { type: "boolean", default: false },
    trace: { type: "boolean", default: false },
    firmware: { type: "string", default: "direct" },
    jit: { type: "string", default: "thread" }
  }
})

/** The ways `--jit` names, as the run's header says them. */
const jitModes: Record<string, string> = { thread: "on the compiler thread", here: "on the emulator thread", v86: "by v86" }
if (!(opt.jit in jitModes)) throw new Error(`--jit: ${Object.keys(jitModes).map((mode) => `"${mode}"`).join(", ")}, not "${opt.jit}"`)

interface Manifest {
  memoryMB: number
  cmdline: string
  files: Record<string, { path: string; size: number }>
}
const manifest: Manifest = JSON.parse(readFileSync(join(assets, "manifest.json"), "utf8"))
const asset = (key: string) => join(assets, manifest.files[key]!.path)
const buffer = (path: string): ArrayBuffer => {
  const b = readFileSync(path)
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer
}

const diskFile = (path: string) => ({ path, byteLength: statSync(path).size })

const images = {
  bios: buffer(opt.bios ?? asset("bios")),
  vgaBios: buffer(asset("vgaBios")),
  kernel: buffer(opt.kernel ?? asset("kernel")),
  // The disk image (files.rootfs) is the boot path when the manifest has one; the
  // initrd (files.initrd, from build.sh --initrd) only when asked for or when it is all
  // there is.
  initrd: opt["no-initrd"]
    ? undefined
    : opt.initrd
    ? buffer(opt.initrd)
    : manifest.files.initrd && (opt["use-initrd"] || !manifest.files.rootfs)
    ? buffer(asset("initrd"))
    : undefined,
  hda: opt.hda ? diskFile(opt.hda) : manifest.files.rootfs && !opt["use-initrd"] ? diskFile(await bundledRootDiskPath()) : undefined
}
const memoryMB = Number(opt.memory ?? manifest.memoryMB)
const cmdline = (opt.cmdline ?? manifest.cmdline) + (opt.append ? ` ${opt.append}` : "")
const runs = Number(opt.runs)
const timeoutMs = Number(opt.timeout) * 1000

const READY_LINE = "v86box: init ready"
const READY_FRAME = [0x56, 0xbb, 0x80]

interface BootResult {
  startedMs?: number
  firstSerialMs?: number
  /** wall-clock arrival (ms since construction) of each serial line */
  lineTimes: number[]
  /** instructions (millions) when each serial line arrived */
  lineMinstr: number[]
  initReadyMs?: number
  /** host CPU time of this process (all threads) up to init ready: what other load on
   * the host inflates less than wall time */
  initReadyCpuMs?: number
  /** emulated instructions executed up to the init ready line (millions): a measure of
   * guest CPU work that, unlike wall time, other load on the host does not inflate */
  initReadyMinstr?: number
  agentReadyMs?: number
  /** wall time the emulator spent asleep, the guest halted until its next timer, up to init ready */
  haltedMs: number
  /** how many such sleeps */
  halts: number
  serial: string
  error?: string
}

interface HaltWatch {
  yield(t: number, tick: number): void
  do_tick(): void
}

const bootOnce = (cmdline: string): Promise<BootResult> =>
  new Promise((resolvePromise) => {
    const t0 = performance.now()
    const cpu0 = process.cpuUsage()
    const serialBytes: number[] = []
    let serial = ""
    let agentBytes: number[] = []
    const result: BootResult = { serial: "", lineTimes: [], lineMinstr: [], haltedMs: 0, halts: 0 }
    let finished = false
    // The agent's frame magic only counts at a frame boundary: the READY frame is the
    // agent's first output, so look for it at the start of the virtio console stream.
    const memoryBytes = memoryMB * 1024 * 1024
    const direct = opt.firmware === "seabios"
      ? undefined
      : directBoot(images.kernel, cmdline, memoryBytes, images.initrd && new Uint8Array(images.initrd))
    const disk = images.hda && new FileDisk(images.hda.path, images.hda.byteLength)
    const emulator = new V86({
      // Compiled once, as the SDK does: the bench measures boots, not wasm compilation.
      wasm_fn: async (imports: WebAssembly.Imports) => (await WebAssembly.instantiate(wasmModule, imports)).exports,
      memory_size: memoryBytes,
      vga_memory_size: 2 * 1024 * 1024,
      ...(direct
        ? { multiboot: { buffer: direct.image } }
        : {
          bios: { buffer: images.bios },
          ...(opt["no-vga-bios"] ? {} : { vga_bios: { buffer: images.vgaBios } }),
          bzimage: { buffer: images.kernel },
          ...(images.initrd ? { initrd: { buffer: images.initrd } } : {}),
          cmdline
        }),
      // The SDK's way: the disk read from its file as the guest asks.
      ...(disk ? { hda: disk } : {}),
      ...deviceOptions,
      virtio_console: true,
      autostart: false,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true
    } as unknown as ConstructorParameters<typeof V86>[0])
    // As the SDK's worker does (src/internal/v86Worker.mjs), before the first instruction.
    emulator.add_listener("emulator-loaded", () => {
      const cpu = (emulator as unknown as { v86: { cpu: any } }).v86.cpu
      removeCdromDrive(cpu)
      const compiler = opt.jit === "thread" ? GuestCodeCompiler.connect() : undefined
      if (opt.jit !== "v86") compileGuestCode(cpu, compiler)
      // After its listeners: adding one refs a port again.
      compiler?.unref()
      direct?.prepare(cpu)
      watchHalts((emulator as unknown as { v86: HaltWatch }).v86)
      emulator.run()
    })

    // v86's main loop returns how long the guest may sleep (halted, waiting for its next
    // timer) and yields to the host for that long; a device event wakes it sooner. Time
    // asleep is wall time no faster host would win back: a kernel's msleep() runs in
    // real time here.
    const watchHalts = (v86: HaltWatch) => {
      const yieldToHost = v86.yield.bind(v86)
      const tick = v86.do_tick.bind(v86)
      let asleepSince: number | undefined
      v86.yield = (t, id) => {
        if (t >= 1 && result.initReadyMs === undefined) {
          asleepSince = performance.now()
          result.halts++
        }
        yieldToHost(t, id)
      }
      v86.do_tick = () => {
        if (asleepSince !== undefined) result.haltedMs += performance.now() - asleepSince
        asleepSince = undefined
        tick()
      }
    }
    const finish = (error?: string) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      clearInterval(sampler)
      result.serial = serial
      if (error) result.error = error
      void Promise.resolve(emulator.destroy()).catch(() => {}).then(() => {
        disk?.close()
        resolvePromise(result)
      })
    }
    const maybeDone = () => {
      if (result.initReadyMs === undefined) return
      if (!hasAgent || result.agentReadyMs !== undefined) finish()
    }
    // Until /init says otherwise we don't know if an agent will speak; give it 30 s.
    let hasAgent = true
    const timer = setTimeout(() => finish(`timeout after ${timeoutMs} ms`), timeoutMs)
    // v86's instruction counter is 32 bits: sample it often to count wrap-arounds.
    let lastCount = 0, wraps = 0
    const instructions = () => {
      const c = emulator.get_instruction_counter()
      if (c < lastCount) wraps++
      lastCount = c
      return (wraps * 2 ** 32 + c) / 1e6
    }
    const sampler = setInterval(instructions, 20)

    emulator.add_listener("emulator-started", () => {
      result.startedMs = performance.now() - t0
    })
    emulator.add_listener("serial0-output-byte", (byte: number) => {
      serialBytes.push(byte)
      if (result.firstSerialMs === undefined) result.firstSerialMs = performance.now() - t0
      if (byte !== 10) return
      serial += Buffer.from(serialBytes).toString("latin1")
      result.lineTimes.push(performance.now() - t0)
      result.lineMinstr.push(instructions())
      serialBytes.length = 0
      if (result.initReadyMs === undefined && serial.includes(READY_LINE)) {
        result.initReadyMs = performance.now() - t0
        const cpu = process.cpuUsage(cpu0)
        result.initReadyCpuMs = (cpu.user + cpu.system) / 1000
        result.initReadyMinstr = instructions()
        maybeDone()
      }
      if (/Kernel panic|end Kernel panic/.test(serial)) finish("kernel panic")
    })
    emulator.add_listener("virtio-console0-output-bytes", (bytes: Uint8Array) => {
      if (result.agentReadyMs !== undefined) return
      agentBytes = agentBytes.concat(Array.from(bytes))
      for (let i = 0; i + 2 < agentBytes.length; i++) {
        if (agentBytes[i] === READY_FRAME[0] && agentBytes[i + 1] === READY_FRAME[1] && agentBytes[i + 2] === READY_FRAME[2]) {
          result.agentReadyMs = performance.now() - t0
          maybeDone()
          break
        }
      }
    })
    // If no agent frame arrives within 10 s of the init line, assume there is no agent.
    const noAgent = setInterval(() => {
      if (result.initReadyMs !== undefined && performance.now() - t0 > result.initReadyMs + 10_000) {
        hasAgent = false
        clearInterval(noAgent)
        maybeDone()
      }
      if (finished) clearInterval(noAgent)
    }, 200)
  })

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const ms = (x: number | undefined) => (x === undefined ? "-" : `${Math.round(x)} ms`)

/** printk lines "[    1.234567] text" -> the steps that took longest. */
const timeline = (serial: string) => {
  const lines = serial.split("\n").map((l) => l.replace(/\r$/, ""))
  const stamped: { t: number; text: string }[] = []
  for (const l of lines) {
    const m = /^\[\s*(\d+\.\d+)\]\s?(.*)$/.exec(l)
    if (m) stamped.push({ t: Number(m[1]), text: m[2]! })
  }
  const steps = stamped.slice(0, -1).map((s, i) => ({ dt: stamped[i + 1]!.t - s.t, after: s.text, before: stamped[i + 1]!.text, at: s.t }))
  return { stamped, slowest: steps.sort((a, b) => b.dt - a.dt).slice(0, 8) }
}

/** The boot in phases, from the trace of a boot with printk on the console. */
const phases = (r: BootResult) => {
  const lines = r.serial.split("\n")
  const at = (re: RegExp) => {
    const i = lines.findIndex((l) => re.test(l))
    return i >= 0 && i < r.lineTimes.length ? { ms: r.lineTimes[i]!, minstr: r.lineMinstr[i]! } : undefined
  }
  const points = [
    { name: "emulator constructed -> first instruction (v86 set-up, kernel unpacked and loaded)", end: r.startedMs === undefined ? undefined : { ms: r.startedMs, minstr: 0 } },
    { name: "-> kernel's serial console on (BIOS, decompression, early kernel set-up)", end: at(/printk: console \[ttyS0\] enabled/) },
    { name: "-> kernel runs /init (kernel init: PCI, serial, ATA probe, root mount)", end: at(/Run \/init as init process/) },
    { name: "-> /init ready line (first exec from the disk, overlay, mounts)", end: r.initReadyMs === undefined ? undefined : { ms: r.initReadyMs, minstr: r.initReadyMinstr ?? 0 } }
  ]
  let prev = { ms: 0, minstr: 0 }
  const out: string[] = []
  for (const p of points) {
    if (!p.end) continue
    out.push(`    ${(p.end.ms - prev.ms).toFixed(0).padStart(6)} ms ${(p.end.minstr - prev.minstr).toFixed(0).padStart(5)} M instr  ${p.name}`)
    prev = p.end
  }
  if (r.agentReadyMs !== undefined && r.initReadyMs !== undefined) {
    out.push(`    ${(r.agentReadyMs - r.initReadyMs).toFixed(0).padStart(6)} ms              -> agent READY frame (agent exec + start)`)
  }
  return out
}

const main = async () => {
  console.log(`v86 boot bench (firmware ${opt.firmware}, guest code compiled ${jitModes[opt.jit]}): ${runs} cold boots, ${memoryMB} MiB, initrd ${images.initrd ? `${images.initrd.byteLength} B` : "none"}${images.hda ? `, hda ${images.hda.byteLength} B` : ""}`)
  console.log(`cmdline: ${cmdline}`)
  const results: BootResult[] = []
  for (let i = 0; i < runs; i++) {
    const r = await bootOnce(cmdline)
    results.push(r)
    console.log(`  boot ${i + 1}: init ready ${ms(r.initReadyMs)} (CPU ${ms(r.initReadyCpuMs)}, ${r.initReadyMinstr?.toFixed(1)} M guest instructions, halted ${ms(r.haltedMs)} in ${r.halts} sleeps), agent READY ${ms(r.agentReadyMs)}${r.error ? `  ERROR: ${r.error}` : ""}`)
    if (r.error) {
      console.log(r.serial.slice(-3000))
      process.exitCode = 1
      return
    }
  }
  const init = results.map((r) => r.initReadyMs).filter((x): x is number => x !== undefined)
  const agent = results.map((r) => r.agentReadyMs).filter((x): x is number => x !== undefined)
  const minstr = results.map((r) => r.initReadyMinstr).filter((x): x is number => x !== undefined)
  const cpu = results.map((r) => r.initReadyCpuMs).filter((x): x is number => x !== undefined)
  if (init.length) console.log(`median time to "${READY_LINE}": ${ms(median(init))}  (min ${ms(Math.min(...init))}, max ${ms(Math.max(...init))})`)
  if (agent.length) console.log(`median time to the agent's READY frame: ${ms(median(agent))}  (min ${ms(Math.min(...agent))}, max ${ms(Math.max(...agent))})`)
  if (cpu.length) console.log(`median host CPU time to "${READY_LINE}": ${ms(median(cpu))}  (this process, all threads; a busy host inflates it less than wall time)`)
  if (minstr.length) console.log(`median guest work to "${READY_LINE}": ${median(minstr).toFixed(1)} M instructions (load on the host does not change this one)`)
  if (opt.log) console.log(`--- serial log of boot 1 ---\n${results[0]!.serial}--- end ---`)

  if (opt["no-timeline"]) return
  // One more boot with every printk on the console, for the timeline. Printing costs
  // time on the emulated serial port, so this boot is not part of the medians.
  const t = await bootOnce(`${cmdline} loglevel=8`)
  console.log(`timeline boot (cmdline + loglevel=8): init ready ${ms(t.initReadyMs)}, agent READY ${ms(t.agentReadyMs)}${t.error ? `  ERROR: ${t.error}` : ""}`)
  console.log("  phases (host wall time, guest instructions):")
  for (const l of phases(t)) console.log(l)
  if (opt.trace) {
    const lines = t.serial.split("\n").slice(0, t.lineTimes.length)
    console.log("--- trace: wall ms, M instructions, line ---")
    lines.forEach((l, i) => console.log(`${t.lineTimes[i]!.toFixed(0).padStart(6)} ${t.lineMinstr[i]!.toFixed(2).padStart(6)}  ${l}`))
  }
  const { stamped, slowest } = timeline(t.serial)
  if (stamped.length) {
    const last = stamped[stamped.length - 1]!
    console.log(`  kernel log: ${stamped.length} printk lines, last at ${last.t.toFixed(3)} s (kernel clock): ${last.text}`)
    console.log("  slowest steps (gap between consecutive printk lines, kernel clock):")
    for (const s of slowest) console.log(`    ${(s.dt * 1000).toFixed(0).padStart(5)} ms at ${s.at.toFixed(3)} s  after: ${s.after.slice(0, 70)}\n${" ".repeat(24)}before: ${s.before.slice(0, 70)}`)
  }
}

await main()
