// The emulator thread: one v86 machine per worker, so the caller's event loop stays
// free and several machines use several cores. Plain JavaScript on purpose: Node loads a
// worker's entry file itself, without the TypeScript loader the caller may be using.
//
// Messages in (from src/internal/v86Machine.ts):
//   { type: "boot", config }   config: { wasm, bios, vgaBios, kernel, initrd, rootfs, cmdline,
//                                        memoryMB, initialState }   (ArrayBuffers / Module)
//   { type: "input", bytes }   bytes for the agent console (guest /dev/hvc0)
//   { type: "save", id }       save the machine state
//   { type: "files-reply", id, bytes }  the 9P reply to the "files" request `id`
//   { type: "stop" }           destroy the emulator, then exit
//   { type: "crash", how }     test hook: crash ("throw", uncaught) or end the thread ("exit")
// Messages out:
//   { _tag: "started" }                 the emulator runs; input may be sent
//   { _tag: "agent", bytes }            bytes the guest wrote to /dev/hvc0
//   { _tag: "serial", bytes }           bytes the guest wrote to ttyS0 (kernel log)
//   { _tag: "saved", id, state }        answer to "save"
//   { _tag: "files", id, bytes }        a 9P request from the guest's virtio-9p device (tag host9p)
//   { _tag: "failed", message }         the emulator could not start or crashed
//   { _tag: "stopped" }
// (checked with a Schema on arrival, in v86Machine.ts)
import { parentPort } from "node:worker_threads"
import V86 from "v86"

const port = parentPort
if (port === null) throw new Error("v86Worker.mjs must run in a worker thread")

/** Guest receive buffers of the virtio console are one page each. */
const GUEST_BUFFER_BYTES = 4096
/** Retry delay while the guest has no free receive buffer. */
const INPUT_RETRY_MILLIS = 1

let emulator
/** v86's reply callbacks of the 9P requests the caller has not answered yet. */
const fileReplies = new Map()
let nextFileRequest = 1
/** Input not yet handed to the guest, oldest first. */
const pendingInput = []
let pendingOffset = 0
let retryTimer

/** Output is coalesced and posted once per macrotask: fewer, larger messages. */
const outbox = { agent: [], serial: [] }
let flushScheduled = false

const scheduleFlush = () => {
  if (flushScheduled) return
  flushScheduled = true
  setImmediate(flush)
}

const flush = () => {
  flushScheduled = false
  for (const kind of ["serial", "agent"]) {
    const chunks = outbox[kind]
    if (chunks.length === 0) continue
    outbox[kind] = []
    const bytes = join(chunks)
    port.postMessage({ _tag: kind, bytes }, [bytes.buffer])
  }
}

const join = (chunks) => {
  let length = 0
  for (const chunk of chunks) length += chunk.length
  const bytes = new Uint8Array(length)
  let offset = 0
  for (const chunk of chunks) {
    bytes.set(chunk, offset)
    offset += chunk.length
  }
  return bytes
}

/**
 * v86 drops console input when the guest has no free receive buffer, and truncates it
 * to the buffer's size; so hand over at most one buffer's worth per free buffer.
 */
const pumpInput = () => {
  retryTimer = undefined
  const queue = emulator?.v86?.cpu?.devices?.virtio_console?.virtio?.queues?.[0]
  while (pendingInput.length > 0 && queue !== undefined && queue.has_request()) {
    const head = pendingInput[0]
    const end = Math.min(head.length, pendingOffset + GUEST_BUFFER_BYTES)
    emulator.bus.send("virtio-console0-input-bytes", head.subarray(pendingOffset, end))
    pendingOffset = end
    if (pendingOffset === head.length) {
      pendingInput.shift()
      pendingOffset = 0
    }
  }
  if (pendingInput.length > 0 && retryTimer === undefined) {
    retryTimer = setTimeout(pumpInput, INPUT_RETRY_MILLIS)
  }
}

/** v86 takes whole ArrayBuffers; what arrives here are Uint8Array views. */
const arrayBufferOf = (bytes) =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer
    : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)

const boot = (config) => {
  const options = {
    wasm_fn: async (imports) => (await WebAssembly.instantiate(config.wasm, imports)).exports,
    memory_size: config.memoryMB * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    bios: { buffer: arrayBufferOf(config.bios) },
    vga_bios: { buffer: arrayBufferOf(config.vgaBios) },
    virtio_console: true,
    autostart: true,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    // Always present, mounted or not: a saved state and the machine resuming it must have
    // the same devices. The caller's file server answers (src/internal/fileServer.ts).
    filesystem: {
      handle9p: (request, reply) => {
        const id = nextFileRequest++
        fileReplies.set(id, reply)
        // v86 made `request` for this call alone: hand its buffer over, no copy.
        port.postMessage({ _tag: "files", id, bytes: request }, [request.buffer])
      }
    }
  }
  // The root disk is needed after a restore too: the kernel reads it lazily.
  if (config.rootfs !== undefined) options.hda = { buffer: arrayBufferOf(config.rootfs) }
  if (config.initialState !== undefined) {
    options.initial_state = { buffer: arrayBufferOf(config.initialState) }
  } else {
    options.bzimage = { buffer: arrayBufferOf(config.kernel) }
    if (config.initrd !== undefined) options.initrd = { buffer: arrayBufferOf(config.initrd) }
    options.cmdline = config.cmdline
  }
  emulator = new V86(options)
  emulator.add_listener("emulator-started", () => port.postMessage({ _tag: "started" }))
  emulator.add_listener("serial0-output-byte", (byte) => {
    outbox.serial.push(Uint8Array.of(byte))
    scheduleFlush()
  })
  emulator.add_listener("virtio-console0-output-bytes", (bytes) => {
    // v86 reuses nothing here, but copy anyway: the buffer is transferred on flush.
    outbox.agent.push(bytes.slice())
    scheduleFlush()
  })
}

const stop = async () => {
  clearTimeout(retryTimer)
  flush()
  try {
    await emulator?.destroy()
  } finally {
    port.postMessage({ _tag: "stopped" })
    port.close()
  }
}

port.on("message", (message) => {
  try {
    switch (message.type) {
      case "boot":
        boot(message.config)
        break
      case "input":
        pendingInput.push(message.bytes)
        pumpInput()
        break
      case "files-reply": {
        const reply = fileReplies.get(message.id)
        fileReplies.delete(message.id)
        reply?.(message.bytes)
        break
      }
      case "save":
        emulator.save_state().then(
          (state) => port.postMessage({ _tag: "saved", id: message.id, state }, [state]),
          (error) => port.postMessage({ _tag: "failed", message: `save_state failed: ${String(error)}` })
        )
        break
      case "stop":
        void stop()
        break
      case "crash":
        // Outside this try: an uncaught error, as a crash inside v86 would be.
        setImmediate(() => {
          if (message.how === "exit") process.exit(70)
          throw new Error("v86box test hook: a simulated emulator crash")
        })
        break
    }
  } catch (error) {
    port.postMessage({ _tag: "failed", message: error instanceof Error ? error.stack ?? error.message : String(error) })
  }
})
