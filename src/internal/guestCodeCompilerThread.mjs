// A guest-code compiler thread: one per core in a process, each serving the emulator
// threads given to it, which send it the WebAssembly modules v86's JIT generates
// (guestCode.mjs) and get them back compiled with V8's optimizing compiler. Started by
// guestCodeCompiler.ts.
//
// Messages in: { port } from the parent: a MessagePort of one emulator thread, whose
// messages are { id, code } (a module's bytes), answered { id, module } or { id, error }.
// workerData.shared: an Int32Array over memory the process's threads share (the cells:
// guestCodeCompiler.ts).
import { parentPort, workerData } from "node:worker_threads"
import { withOptimizingCompiler } from "./v8Flags.mjs"

const { shared, cells } = workerData

const compileOptimized = (code) => withOptimizingCompiler(shared, cells, () => new WebAssembly.Module(code))

parentPort.on("message", ({ port }) => {
  port.on("message", ({ id, code }) => {
    let reply
    try {
      reply = { id, module: compileOptimized(code) }
      Atomics.add(shared, cells.compiled, 1)
    } catch (error) {
      reply = { id, error: String(error?.message ?? error) }
    }
    port.postMessage(reply)
  })
})
