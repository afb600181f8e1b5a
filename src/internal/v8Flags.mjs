// Changing V8's flags from threads of one process. Plain JavaScript: the emulator workers
// and the guest-code compiler threads import it.
//
// V8's flags are process-wide, and the SDK's threads change some for a moment: a compiler
// thread asks for TurboFan while it compiles (guestCodeCompilerThread.mjs), an emulator
// thread exposes `gc` while it makes the context that hands it over (`exposedGc`). Two
// threads doing that at once undo each other's change: with 4 emulator workers started
// together, one found `gc` already hidden again by another and crashed on start (its
// sandbox booted cold, and the warm-start state it could not resume was deleted). So every
// change is made holding a lock in memory the threads share.
import { setFlagsFromString } from "node:v8"
import { runInNewContext, runInThisContext } from "node:vm"

/**
 * Runs `change` holding the lock in `cells[index]` (an Int32Array over shared memory,
 * zeroed). A thread that ended while holding it (a crash) would hold it forever: after a
 * second of waiting the lock is taken anyway.
 */
export const withFlagsLock = (cells, index, change) => {
  const giveUpAt = Date.now() + 1000
  while (Atomics.compareExchange(cells, index, 0, 1) !== 0 && Date.now() < giveUpAt) Atomics.wait(cells, index, 1, 1)
  Atomics.store(cells, index, 1)
  try {
    return change()
  } finally {
    Atomics.store(cells, index, 0)
    Atomics.notify(cells, index, 1)
  }
}

/**
 * V8's full garbage collection for this thread, or undefined if it cannot be had. With
 * `node --expose-gc` it is there already (and the flag stays as the process set it);
 * otherwise `--expose-gc` is on only while a new context is made, under the lock.
 */
export const exposedGc = (cells, index) => {
  if (typeof globalThis.gc === "function") return globalThis.gc
  return withFlagsLock(cells, index, () => {
    setFlagsFromString("--expose-gc")
    try {
      return runInNewContext("typeof gc === 'function' ? gc : undefined")
    } finally {
      setFlagsFromString("--no-expose-gc")
    }
  })
}

/**
 * V8 chooses its WebAssembly compiler from process-wide flags, and with its defaults a
 * module is compiled by Liftoff, its baseline compiler, function by function, as first
 * called. While any thread needs optimized code (a guest-code compiler thread compiling,
 * an emulator thread serializing or loading code: compiledCode.mjs), the flags ask for
 * TurboFan and for all of a module at once; when the last one is done they go back to
 * what the process started with. (Each thread setting and resetting them around its own
 * work would reset them under another thread's.) Another thread compiling WebAssembly
 * meanwhile gets optimized code too: slower to make, never wrong.
 *
 * `cells[lock]` is the flags lock (`withFlagsLock`), `cells[users]` counts the threads
 * inside.
 */
export const withOptimizingCompiler = (cells, { lock, users }, run) => {
  withFlagsLock(cells, lock, () => {
    if (Atomics.add(cells, users, 1) === 0) setFlagsFromString(optimizing)
  })
  try {
    return run()
  } finally {
    withFlagsLock(cells, lock, () => {
      if (Atomics.sub(cells, users, 1) === 1) setFlagsFromString(asStarted)
    })
  }
}

const startedWith = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
const optimizing = "--no-liftoff --no-wasm-lazy-compilation"
const asStarted = [
  startedWith.includes("--no-liftoff") ? "--no-liftoff" : "--liftoff",
  startedWith.includes("--no-wasm-lazy-compilation") ? "--no-wasm-lazy-compilation" : "--wasm-lazy-compilation"
].join(" ")

/**
 * Calls one of V8's test functions: `source` is a function of them, as
 * `(a, b) => %Name(a, b)`, called with `args`. Their syntax parses only while
 * `--allow-natives-syntax` is on, and V8 parses a function's body when it is first
 * called, so the flag is on while the source is compiled and called, under the flags
 * lock. (Node 20 has no other way to save compiled WebAssembly: compiledCode.mjs.)
 */
export const callNative = (cells, lock, source, args) =>
  withFlagsLock(cells, lock, () => {
    setFlagsFromString("--allow-natives-syntax")
    try {
      return runInThisContext(`(${source})`)(...args)
    } finally {
      setFlagsFromString("--no-allow-natives-syntax")
    }
  })
