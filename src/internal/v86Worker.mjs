// The emulator thread: one v86 machine per worker, so the caller's event loop stays
// free and several machines use several cores. Plain JavaScript on purpose: Node loads a
// worker's entry file itself, without the TypeScript loader the caller may be using.
//
// Messages in (from src/internal/v86Machine.ts):
//   { type: "boot", config }   config: { wasm, firmware, bios, vgaBios, kernel, initrd, rootfs,
//                                        cmdline, memoryMB, initialState, reuse, compiler, code }
//                              (ArrayBuffers / Module; the BIOS images only with firmware "seabios";
//                              rootfs: { path, byteLength }, the root disk's file, read as needed)
//                              with reuse, initialState goes into the paused emulator this worker
//                              already has (see "Recycled emulators" below); compiler: a
//                              MessagePort to a guest-code compiler thread (guestCode.mjs),
//                              given to a new emulator only; code: { record } to keep what
//                              "save-code" needs, or { saved } (v86Machine.ts's TrainedCode)
//                              to resume initialState with it (compiledCode.mjs)
//   { type: "pause" }          stop the emulator and drop its pending input and output: its
//                              sandbox is gone, the emulator waits for a "boot" with reuse
//   { type: "input", bytes }   bytes for the agent console (the virtio console's port 0)
//   { type: "save", id }       save the machine state
//   { type: "save-code", id }  save the machine state and its compiled code (recorded: boot's code.record)
//   { type: "files-reply", id, bytes }  the 9P reply to the "files" request `id`
//   { type: "stop" }           destroy the emulator, then exit
//   { type: "crash", how }     test hook: crash ("throw", uncaught) or end the thread ("exit")
// Messages out:
//   { _tag: "started" }                 the emulator runs; input may be sent
//   { _tag: "agent", bytes }            bytes the guest wrote to the agent console
//   { _tag: "serial", bytes }           bytes the guest wrote to ttyS0 (kernel log)
//   { _tag: "saved", id, state }        answer to "save"
//   { _tag: "code-saved", id, state, code }  answer to "save-code" (code: compiledCode.mjs's `saveCode`)
//   { _tag: "code-not-saved", id, message }  ... when the code cannot be saved (the machine runs on)
//   { _tag: "code-loaded", modules } / { _tag: "code-not-loaded", reason }  how resuming with
//                                       boot's code.saved went (before "started")
//   { _tag: "code-damaged" }            a module of code.saved was damaged (the worker then fails)
//   { _tag: "files", id, bytes }        a 9P request from the guest's virtio-9p device (tag host9p)
//   { _tag: "failed", message }         the emulator could not start or crashed
//   { _tag: "stopped" }
// (checked with a Schema on arrival, in v86Machine.ts)
import { parentPort, workerData } from "node:worker_threads"
import V86 from "v86"
import { directBoot } from "./directBoot.mjs"
import { FileDisk } from "./fileDisk.mjs"
import { deviceOptions, removeCdromDrive } from "./machineDevices.mjs"
import { cpuGate } from "./cpuGate.mjs"
import { compileGuestCode } from "./guestCode.mjs"
import { codeReader, installCode, probeCode, recordModules, saveCode } from "./compiledCode.mjs"
import { sleepWhileHalted, wake } from "./emulatorPacing.mjs"
import { frameEnds, outbox } from "./outputPacing.mjs"
import { exposedGc } from "./v8Flags.mjs"

const port = parentPort
if (port === null) throw new Error("v86Worker.mjs must run in a worker thread")

/** V8's flags, changed with the process's other threads (v8Flags.mjs). */
const v8Flags = { ...workerData.v8Flags, cells: new Int32Array(workerData.v8Flags.memory) }

/**
 * A full garbage collection of this thread. Booting, restoring and saving leave ~100 MB
 * of copies behind (images, state blocks, the packed memory), and an idle emulator
 * allocates too little for V8 ever to collect them: without this every idle sandbox
 * keeps them. (If V8 would not hand over `gc`, V8 collects them when it will.)
 */
const collectGarbage = (() => {
  const gc = exposedGc(v8Flags.cells, v8Flags.lock)
  return () => {
    if (gc !== undefined) setTimeout(gc, 0)
  }
})()

/** Guest receive buffers of the virtio console are one page each. */
const GUEST_BUFFER_BYTES = 4096
/** Retry delay while the guest has no free receive buffer. */
const INPUT_RETRY_MILLIS = 1

/** Turns at the CPU with the process's other emulators (cpuGate.mjs), if v86Machine.ts gave it. */
const gate = workerData?.cpuGate === undefined ? undefined : cpuGate(workerData.cpuGate.memory, workerData.cpuGate)

/** Makes the emulator run its slices only in its turns, and hand its turn on when the guest halts. */
const takeTurns = (cpu) => {
  const runSlice = cpu.main_loop
  cpu.main_loop = () => {
    gate.enter()
    const sleepMillis = runSlice()
    if (cpu.in_hlt[0]) gate.leave()
    return sleepMillis
  }
}

let emulator
/** The root disk: a file, read as the guest asks (src/internal/fileDisk.mjs). */
let rootDisk
/** This emulator's port to its guest-code compiler thread: open, it keeps this thread alive. */
let compiler
/** How its guest code is compiled (guestCode.mjs's `compilation`). */
let compilation
/** The modules in v86's table, recorded when the boot asked for it until the code is saved (compiledCode.mjs). */
let recorded
/** Closes what the emulator's machine held open besides itself: its disk file, compiler port and trained code's file. */
const closeMachineHandles = () => {
  rootDisk?.close()
  rootDisk = undefined
  closeTrainedCode()
  compiler?.close()
  compiler = undefined
}
/** v86's reply callbacks of the 9P requests the caller has not answered yet. */
const fileReplies = new Map()
let nextFileRequest = 1
/** Input not yet handed to the guest, oldest first. */
const pendingInput = []
let pendingOffset = 0
let retryTimer

/**
 * The guest's output, posted to the caller's thread at once when it completes a frame
 * the caller waits for (the layout and types: `workerData.agentFrames`, always given by
 * v86Machine.ts), else held briefly (outputPacing.mjs).
 */
const agentFrameEnds = frameEnds(workerData.agentFrames)
const output = outbox({
  post: (kind, bytes) => port.postMessage({ _tag: kind, bytes }, [bytes.buffer]),
  isUrgent: (kind, chunk) => kind === "agent" && agentFrameEnds(chunk)
})
// A crash ends this thread before the hold would: what the guest wrote last (a kernel
// message, the agent's last frames) still goes out, for the caller's console tail.
process.on("uncaughtExceptionMonitor", () => output.flush())

/**
 * v86 drops console input when the guest has no free receive buffer, and truncates it
 * to the buffer's size; so hand over at most one buffer's worth per free buffer.
 */
const pumpInput = () => {
  retryTimer = undefined
  const queue = emulator?.v86?.cpu?.devices?.virtio_console?.virtio?.queues?.[0]
  let handedOver = false
  while (pendingInput.length > 0 && queue !== undefined && queue.has_request()) {
    handedOver = true
    const head = pendingInput[0]
    const end = Math.min(head.length, pendingOffset + GUEST_BUFFER_BYTES)
    emulator.bus.send("virtio-console0-input-bytes", head.subarray(pendingOffset, end))
    pendingOffset = end
    if (pendingOffset === head.length) {
      pendingInput.shift()
      pendingOffset = 0
    }
  }
  if (handedOver) wake(emulator.v86)
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
  if (emulator !== undefined) {
    if (config.reuse && config.initialState !== undefined) return void resumeInPlace(arrayBufferOf(config.initialState))
    // Not reusable: this worker only gave its thread.
    const old = emulator
    emulator = undefined
    closeMachineHandles()
    return void Promise.resolve(old.destroy()).catch(() => undefined).then(() => boot(config))
  }
  compiler = config.compiler
  // v86 keeps `options` (and so this function) for the emulator's life: what it holds
  // must not include the images, which are needed only until the machine runs.
  const wasm = config.wasm
  const options = {
    wasm_fn: async (imports) => (await WebAssembly.instantiate(wasm, imports)).exports,
    memory_size: config.memoryMB * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    virtio_console: true,
    // Started by hand once loaded: the JIT hook goes in before the first instruction.
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
    ...deviceOptions,
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
  // The root disk is needed after a restore too: the kernel reads it lazily. v86 takes
  // any object with get/set/load as a disk.
  if (config.rootfs !== undefined) {
    try {
      rootDisk = new FileDisk(config.rootfs.path, config.rootfs.byteLength)
    } catch (error) {
      return void port.postMessage({ _tag: "failed", message: `the root disk: ${error.message}` })
    }
    options.hda = rootDisk
  }
  const state = config.initialState === undefined ? undefined : arrayBufferOf(config.initialState)
  if (config.firmware === "seabios") {
    options.bios = { buffer: arrayBufferOf(config.bios) }
    options.vga_bios = { buffer: arrayBufferOf(config.vgaBios) }
  }
  let direct
  if (state === undefined && config.firmware === "seabios") {
    options.bzimage = { buffer: arrayBufferOf(config.kernel) }
    if (config.initrd !== undefined) options.initrd = { buffer: arrayBufferOf(config.initrd) }
    options.cmdline = config.cmdline
  } else if (state === undefined) {
    // v86 starts a multiboot image without a BIOS itself; `direct.prepare` does the rest
    // once the machine has loaded, before its first instruction.
    try {
      direct = directBoot(arrayBufferOf(config.kernel), config.cmdline, options.memory_size, config.initrd)
    } catch (error) {
      // A kernel this cannot boot: say why, without a stack trace into this file.
      return void port.postMessage({ _tag: "failed", message: `direct boot: ${error.message}` })
    }
    options.multiboot = { buffer: direct.image }
  }
  emulator = new V86(options)
  emulator.add_listener("emulator-loaded", () => {
    const cpu = emulator.v86.cpu
    removeCdromDrive(cpu)
    compilation = compileGuestCode(cpu, compiler)
    if (config.code?.record === true) recorded = recordModules(cpu)
    if (gate !== undefined) takeTurns(cpu)
    sleepWhileHalted(emulator.v86)
    // A saved state is restored by `resume` once v86 has loaded, not as `initial_state`.
    if (state !== undefined) return void resume(state, config.code?.saved)
    direct?.prepare(cpu)
    emulator.run()
  })
  emulator.add_listener("emulator-stopped", () => gate?.leave())
  emulator.add_listener("emulator-started", () => {
    port.postMessage({ _tag: "started" })
    // Booted or restored: the kernel is in guest memory now. v86's loader keeps the
    // kernel's buffers all the same: detach them to free them.
    for (const image of ["bzimage", "initrd", "multiboot"]) detach(options[image]?.buffer)
    for (const image of ["hda", "bzimage", "initrd", "multiboot"]) delete options[image]
    collectGarbage()
  })
  emulator.add_listener("serial0-output-byte", (byte) => output.add("serial", Uint8Array.of(byte)))
  // v86 reuses nothing here, but copy anyway: the buffer is transferred.
  emulator.add_listener("virtio-console0-output-bytes", (bytes) => output.add("agent", bytes.slice()))
}

/** Frees an ArrayBuffer's memory now, whoever still holds the (then empty) buffer. */
const detach = (buffer) => {
  if (buffer !== undefined) structuredClone(buffer, { transfer: [buffer] })
}

const PAGE_BYTES = 4096

/**
 * Where v86 writes while it sets a machine up: its BIOS images and tables, all in the
 * first MiB (measured: 1 page written with the direct boot, 43 with SeaBIOS, none
 * above 0x100000).
 */
const SET_UP_BYTES = 0x100000

/**
 * Restores a saved state into the loaded, not yet started machine, then starts it. v86
 * clears all of guest memory first, then writes the state's non-zero pages. A new
 * machine's memory is zero but for what v86's set-up wrote in the first MiB, so only
 * that is checked and cleared: even reading a page of the rest makes the host back it
 * with RAM (measured: all 64 MiB resident after such a check, where the state has
 * ~19 MiB of non-zero pages), and the pages the saved guest never used cost none.
 */
const resume = (state, trainedCode) => {
  const cpu = emulator.v86.cpu
  const clearMemory = cpu.zero_memory
  const code = trainedCode === undefined ? undefined : loadTrainedCode(cpu, trainedCode)
  return restoreAndRun(state, {
    zero_memory: (start, length) => {
      for (let page = start; page < Math.min(start + length, SET_UP_BYTES); page += PAGE_BYTES) {
        if (!cpu.is_memory_zeroed(page, PAGE_BYTES)) clearMemory(page, PAGE_BYTES)
      }
    }
  }, code === undefined ? undefined : () => {
    installCode(cpu, trainedCode, code.loaded, code.reader.read, v8Flags, code.loadAhead, closeTrainedCode)
    for (const buffer of [trainedCode.engine.pages.buffer, trainedCode.engine.packed.buffer]) detach(buffer)
    port.postMessage({ _tag: "code-loaded", modules: trainedCode.modules.length })
  })
}

/**
 * Asks the compiler thread for every saved module but `loaded` now, while the state is
 * being restored (~0.3 s; the guest's first steps after it call ~60 of ~100 modules):
 * `loadAhead(entry, take)` (compiledCode.mjs's `installCode`) hands over one that came,
 * at once, or when it comes.
 */
const askAhead = (trainedCode, loaded) => {
  const arrived = new Map()
  const takers = new Map()
  for (const entry of trainedCode.modules) {
    if (loaded.some((module) => module.slot === entry.slot)) continue
    compilation.loadSaved(trainedCode.path, entry, (module) => {
      const take = takers.get(entry)
      if (take === undefined) arrived.set(entry, module)
      else take(module)
    })
  }
  return (entry, take) => {
    const module = arrived.get(entry)
    arrived.delete(entry)
    if (module === undefined) takers.set(entry, take)
    else take(module)
  }
}

/** The file of the trained code this emulator still loads modules from (compiledCode.mjs). */
let trainedCodeFile
const closeTrainedCode = () => {
  trainedCodeFile?.close()
  trainedCodeFile = undefined
}

/**
 * The trained code's first module loaded, and a reader of its file for the rest
 * (compiledCode.mjs); or undefined, said to the caller, if the code cannot be used.
 */
const loadTrainedCode = (cpu, trainedCode) => {
  let reader
  let probe
  try {
    reader = codeReader(trainedCode.path, () => port.postMessage({ _tag: "code-damaged" }))
    probe = probeCode(cpu, trainedCode, reader.read, v8Flags)
  } catch (error) {
    probe = { failed: String(error?.message ?? error) }
  }
  if (probe.loaded !== undefined) {
    trainedCodeFile = reader
    return { reader, loaded: probe.loaded, loadAhead: askAhead(trainedCode, probe.loaded) }
  }
  reader?.close()
  port.postMessage({ _tag: "code-not-loaded", reason: probe.failed })
  return undefined
}

/**
 * Restores a saved state with some of v86's CPU methods replaced for the restore only,
 * frees the state, calls `restored` (if given), and starts the machine (its
 * "emulator-started" listener reports it and collects the garbage); a state that does
 * not restore is reported as "failed".
 */
const restoreAndRun = async (state, replacements, restored) => {
  const cpu = emulator.v86.cpu
  const originals = Object.fromEntries(Object.keys(replacements).map((name) => [name, cpu[name]]))
  Object.assign(cpu, replacements)
  try {
    await emulator.restore_state(state)
  } catch (error) {
    port.postMessage({ _tag: "failed", message: `the saved state did not restore: ${String(error?.message ?? error)}` })
    return
  } finally {
    Object.assign(cpu, originals)
    detach(state)
  }
  restored?.()
  emulator.run()
}

/*
 * Recycled emulators. v86 compiles guest code to WebAssembly only once a page has run
 * ~200,000 instructions, and a restored state keeps no compiled code: a freshly resumed
 * guest runs interpreted, its first ~30 commands 4-8x slower. A released sandbox's
 * emulator has that code compiled. Restoring a state into it the usual way would throw
 * all of it away (v86 clears its JIT cache on restore), but compiled code stays correct
 * for every page whose bytes the state does not change: the same rule v86 applies when
 * the guest writes memory (it drops the code of written pages only). So the state's
 * memory goes in page by page, and only pages that differ are written and have their code
 * dropped; after a warm start from the same state file that is ~400 of 16,384 pages.
 * Measured: the next 20 `exec("true")` took ~1 s in all instead of ~6 s.
 */
const pause = () => {
  emulator?.stop()
  resetIo()
  // Its code is no longer needed whole: what the next machine here saves is not recorded.
  recorded?.stop()
  recorded = undefined
}

/** Drops input, output and 9P replies meant for the guest that was here before. */
const resetIo = () => {
  clearTimeout(retryTimer)
  retryTimer = undefined
  pendingInput.length = 0
  pendingOffset = 0
  output.clear()
  fileReplies.clear()
}

const resumeInPlace = async (state) => {
  const cpu = emulator.v86.cpu
  await stopped()
  resetIo()
  const unpackMemory = (bitmap, packed) => {
    const memory = new Uint8Array(cpu.mem8.buffer, cpu.mem8.byteOffset, cpu.mem8.length)
    const zeroPage = new Uint8Array(PAGE_BYTES)
    const pages = cpu.memory_size[0] / PAGE_BYTES
    let packedPage = 0
    for (let page = 0; page < pages; page++) {
      const wanted = bitmap.get(page)
        ? packed.subarray(packedPage * PAGE_BYTES, ++packedPage * PAGE_BYTES)
        : zeroPage
      const start = page * PAGE_BYTES
      const current = memory.subarray(start, start + PAGE_BYTES)
      if (Buffer.compare(current, wanted) !== 0) {
        cpu.jit_dirty_cache(start, start + PAGE_BYTES)
        current.set(wanted)
      }
    }
  }
  await restoreAndRun(state, { unpack_memory: unpackMemory, jit_clear_cache: () => {} })
}

/** Stops the emulator, if it runs, and waits until it has. */
const stopped = async () => {
  if (!emulator.is_running()) return
  emulator.stop()
  await new Promise((resolve) => {
    const onStopped = () => {
      emulator.remove_listener("emulator-stopped", onStopped)
      resolve()
    }
    emulator.add_listener("emulator-stopped", onStopped)
  })
}

/** How long `saveCode` waits for modules still being compiled to be installed. */
const PENDING_WAIT_MILLIS = 10_000

/**
 * The state and compiled code at one moment: the emulator is stopped while they are
 * taken, once no module is still being compiled (v86 would wait forever, in the machine
 * resumed from them, for a module it had asked for), then runs on.
 */
const saveStateAndCode = async (id) => {
  const cpu = emulator.v86.cpu
  const wasRunning = emulator.is_running()
  await stopped()
  try {
    if (recorded === undefined) throw new Error("this emulator did not record its code")
    for (let waited = 0; compilation.pending() > 0; waited += 5) {
      if (waited > PENDING_WAIT_MILLIS) throw new Error("modules were still being compiled")
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    if (!compilation.optimizedOnly()) throw new Error("some of its code was not compiled by a compiler thread")
    const state = await emulator.save_state()
    const code = saveCode(cpu, recorded, v8Flags)
    const transfer = [state, code.engine.pages.buffer, code.engine.packed.buffer, ...code.modules.map((module) => module.code.buffer)]
    port.postMessage({ _tag: "code-saved", id, state, code }, transfer)
    recorded.stop()
    recorded = undefined
  } catch (error) {
    port.postMessage({ _tag: "code-not-saved", id, message: String(error?.message ?? error) })
  } finally {
    if (wasRunning) emulator.run()
    collectGarbage()
  }
}

const stop = async () => {
  clearTimeout(retryTimer)
  output.flush()
  try {
    await emulator?.destroy()
  } finally {
    closeMachineHandles()
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
        wake(emulator?.v86)
        break
      }
      case "save":
        emulator.save_state().then(
          (state) => {
            port.postMessage({ _tag: "saved", id: message.id, state }, [state])
            collectGarbage()
          },
          (error) => port.postMessage({ _tag: "failed", message: `save_state failed: ${String(error)}` })
        )
        break
      case "save-code":
        void saveStateAndCode(message.id)
        break
      case "pause":
        pause()
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
