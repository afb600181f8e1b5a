// A guest-code compiler thread: one per core in a process, each serving the emulator
// threads given to it, which send it the WebAssembly modules v86's JIT generates
// (guestCode.mjs) and get them back compiled with V8's optimizing compiler. Started by
// guestCodeCompiler.ts.
//
// Messages in: { port } from the parent: a MessagePort of one emulator thread, whose
// messages are { id, code } (a module's bytes) or { id, saved: { path, entry } } (a module
// of a trained state's file, to load: compiledCode.mjs), answered { id, module } or
// { id, error }.
// workerData.shared: an Int32Array over memory the process's threads share (the cells:
// guestCodeCompiler.ts).
import { parentPort, workerData } from "node:worker_threads"
import { codeReader, savedModule } from "./compiledCode.mjs"
import { withOptimizingCompiler } from "./v8Flags.mjs"

const { shared, cells } = workerData

const compileOptimized = (code) => withOptimizingCompiler(shared, cells, () => new WebAssembly.Module(code))

/** V8's flags, for compiledCode.mjs. */
const v8Flags = { cells: shared, lock: cells.lock, users: cells.users }

/** A saved module, loaded; a damaged one, or one V8 will not load, is an error (the emulator loads it itself then). */
const loadSaved = ({ path, entry }) => {
  const reader = codeReader(path, () => undefined)
  try {
    const module = savedModule(entry, reader.read, v8Flags)
    if (module === undefined) throw new Error("V8 would not load it")
    return module
  } finally {
    reader.close()
  }
}

parentPort.on("message", ({ port }) => {
  port.on("message", ({ id, code, saved }) => {
    let reply
    try {
      if (saved !== undefined) {
        reply = { id, module: loadSaved(saved) }
      } else {
        reply = { id, module: compileOptimized(code) }
        Atomics.add(shared, cells.compiled, 1)
      }
    } catch (error) {
      reply = { id, error: String(error?.message ?? error) }
    }
    port.postMessage(reply)
  })
})
