// A guest-code compiler thread: one per core in a process, each serving the emulator
// threads given to it, which send it the WebAssembly modules v86's JIT generates
// (guestCode.mjs) and get them back compiled with V8's optimizing compiler. Started by
// guestCodeCompiler.ts.
//
// Messages in: { port } from the parent: a MessagePort of one emulator thread, whose
// messages are { id, code } (a module's bytes), answered { id, module } or { id, error }.
// workerData.shared: an Int32Array over memory the process's compiler threads share (below).
import { setFlagsFromString } from "node:v8"
import { parentPort, workerData } from "node:worker_threads"
import { withFlagsLock } from "./v8Flags.mjs"

/**
 * V8 chooses its compiler from process-wide flags, and with its defaults a module is
 * compiled by Liftoff, function by function, as first called. While any compiler thread
 * compiles, the flags ask for TurboFan and for all of a module at once; when the last
 * one is done they go back to what the process started with. (Each thread setting and
 * resetting them around its own compile would reset them under another thread's compile.)
 * Another thread compiling WebAssembly meanwhile gets optimized code too: slower to make,
 * never wrong.
 */
const startedWith = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
const optimizing = "--no-liftoff --no-wasm-lazy-compilation"
const asStarted = [
  startedWith.includes("--no-liftoff") ? "--no-liftoff" : "--liftoff",
  startedWith.includes("--no-wasm-lazy-compilation") ? "--no-wasm-lazy-compilation" : "--wasm-lazy-compilation"
].join(" ")

/** Shared by the process's compiler threads: [modules compiled, flags lock, threads compiling]. */
const shared = workerData.shared
const COMPILED = 0
const LOCK = 1
const COMPILING = 2

const compileOptimized = (code) => {
  withFlagsLock(shared, LOCK, () => {
    if (Atomics.add(shared, COMPILING, 1) === 0) setFlagsFromString(optimizing)
  })
  try {
    return new WebAssembly.Module(code)
  } finally {
    withFlagsLock(shared, LOCK, () => {
      if (Atomics.sub(shared, COMPILING, 1) === 1) setFlagsFromString(asStarted)
    })
  }
}

parentPort.on("message", ({ port }) => {
  port.on("message", ({ id, code }) => {
    let reply
    try {
      reply = { id, module: compileOptimized(code) }
      Atomics.add(shared, COMPILED, 1)
    } catch (error) {
      reply = { id, error: String(error?.message ?? error) }
    }
    port.postMessage(reply)
  })
})
