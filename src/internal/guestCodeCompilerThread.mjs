// A guest-code compiler thread: one per core in a process, each serving the emulator
// threads given to it, which send it the WebAssembly modules v86's JIT generates
// (guestCode.mjs) and get them back compiled with V8's optimizing compiler. Started by
// guestCodeCompiler.ts.
//
// Messages in: { port } from the parent: a MessagePort of one emulator thread, whose
// messages are { id, code } (a module's bytes), answered { id, module } or { id, error }.
// workerData.compiled: an Int32Array over shared memory, [0] counts modules compiled.
import { setFlagsFromString } from "node:v8"
import { parentPort, workerData } from "node:worker_threads"

/**
 * V8 chooses its compiler from process-wide flags, and with its defaults a module is
 * compiled by Liftoff, function by function, as first called. For the moment of one
 * synchronous compile this thread asks for TurboFan and for all of it at once, then puts
 * back what the process started with. Another thread compiling WebAssembly in that
 * moment gets optimized code too: slower to make, never wrong.
 */
const startedWith = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
const optimizing = "--no-liftoff --no-wasm-lazy-compilation"
const asStarted = [
  startedWith.includes("--no-liftoff") ? "--no-liftoff" : "--liftoff",
  startedWith.includes("--no-wasm-lazy-compilation") ? "--no-wasm-lazy-compilation" : "--wasm-lazy-compilation"
].join(" ")

const compileOptimized = (code) => {
  setFlagsFromString(optimizing)
  try {
    return new WebAssembly.Module(code)
  } finally {
    setFlagsFromString(asStarted)
  }
}

const compiled = workerData?.compiled

parentPort.on("message", ({ port }) => {
  port.on("message", ({ id, code }) => {
    let reply
    try {
      reply = { id, module: compileOptimized(code) }
      if (compiled !== undefined) Atomics.add(compiled, 0, 1)
    } catch (error) {
      reply = { id, error: String(error?.message ?? error) }
    }
    port.postMessage(reply)
  })
})
