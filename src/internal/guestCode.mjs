// How the guest code v86's JIT generates becomes code that runs. Plain JavaScript: the
// emulator's worker imports it (and bench/boot.ts, to boot the way the SDK does).
//
// v86 compiles a hot guest page to a small WebAssembly module and hands its bytes to
// `cpu.codegen_finalize`; the page is interpreted until `codegen_finalize_finished` says
// the module is in the table. v86's own version compiles it with the asynchronous
// `WebAssembly.instantiate`, which V8 compiles with Liftoff, its baseline compiler,
// and which settles late on this thread, which v86 keeps busy.
//
// Measured (docs/profiling.md, session 11): v86's modules are one big function each
// (8-210 KB), and Liftoff's code for them runs no faster than v86's interpreter; only
// V8's optimizing compiler (TurboFan, 30-300 ms per module) makes them fast, and V8
// tiers a module up only after it has run for a while, on threads the emulators compete
// with. So the modules are compiled optimized, once, by one of the process's compiler
// threads (guestCodeCompilerThread.mjs), while the emulator goes on interpreting the page.

export const JIT_TABLE_OFFSET = 1024 // v86's WASM_TABLE_OFFSET (src/const.js)

/** Puts a compiled module where v86 calls it and tells v86 the page's code is there. */
const install = (cpu, job, module) => {
  const instance = new WebAssembly.Instance(module, { e: cpu.jit_imports })
  cpu.wm.wasm_table.set(job.tableIndex + JIT_TABLE_OFFSET, instance.exports.f)
  cpu.codegen_finalize_finished(job.tableIndex, job.start, job.stateFlags)
}

/** The module's bytes, copied out of v86's memory (its buffer is reused). */
const codeOf = (cpu, pointer, length) => new Uint8Array(cpu.wasm_memory.buffer, pointer >>> 0, length >>> 0).slice()

/**
 * Compiles a module here and now, with V8's defaults, and installs it from a microtask:
 * v86 holds its JIT state while it calls `codegen_finalize` and cannot take the
 * "finished" call re-entrantly (its own SYNC_COMPILATION switch does that and panics).
 */
const compileHere = (cpu, job, code) => {
  const module = new WebAssembly.Module(code)
  queueMicrotask(() => install(cpu, job, module))
}

/**
 * What the emulator thread can ask of how its guest code is compiled: `pending`, modules
 * handed to v86's JIT and not installed yet; `optimizedOnly`, whether every module so
 * far was compiled by a compiler thread (with TurboFan: compiledCode.mjs saves only such);
 * `loadSaved(path, entry, loaded)`, a saved module (compiledCode.mjs) loaded on the
 * compiler thread and handed to `loaded`, if it can be (nothing happens otherwise).
 */
const compilation = (pending, optimizedOnly, loadSaved) => ({ pending, optimizedOnly, loadSaved })

/** Every module compiled on this thread (`compileHere`): when there is no compiler thread. */
export const compileGuestCodeSynchronously = (cpu) => {
  cpu.codegen_finalize = function(tableIndex, start, stateFlags, pointer, length) {
    compileHere(this, { tableIndex, start, stateFlags }, codeOf(this, pointer, length))
  }
  return compilation(() => 0, () => false, () => undefined)
}

/**
 * Sends each module to the compiler thread at the other end of `port` and installs what
 * comes back; the page runs interpreted meanwhile. If the compiler thread goes away, the
 * modules it still had, and all later ones, are compiled here (`compileHere`).
 */
export const compileGuestCodeOffThread = (cpu, port) => {
  /** Modules sent and not back yet, by request id: the job and its bytes (for the fallback). */
  const waiting = new Map()
  /** Saved modules asked for and not back yet, by request id: who takes them. */
  const loading = new Map()
  let nextId = 1
  let compiler = port
  let optimizedOnly = true

  cpu.codegen_finalize = function(tableIndex, start, stateFlags, pointer, length) {
    const job = { tableIndex, start, stateFlags }
    const code = codeOf(this, pointer, length)
    if (compiler === undefined) {
      optimizedOnly = false
      return compileHere(this, job, code)
    }
    const id = nextId++
    waiting.set(id, { job, code })
    compiler.postMessage({ id, code })
  }

  port.on("message", ({ id, module, error }) => {
    const loaded = loading.get(id)
    loading.delete(id)
    if (loaded !== undefined && module !== undefined) return loaded(module)
    const request = waiting.get(id)
    if (request === undefined) return
    waiting.delete(id)
    if (error !== undefined) throw new Error(`V8 rejected guest code v86 generated: ${error}`)
    install(cpu, request.job, module)
  })
  port.on("close", () => {
    compiler = undefined
    const left = [...waiting.values()]
    waiting.clear()
    if (left.length > 0) optimizedOnly = false
    for (const { job, code } of left) compileHere(cpu, job, code)
    loading.clear()
  })
  const loadSaved = (path, entry, loaded) => {
    if (compiler === undefined) return
    const id = nextId++
    loading.set(id, loaded)
    compiler.postMessage({ id, saved: { path, entry } })
  }
  return compilation(() => waiting.size, () => optimizedOnly, loadSaved)
}

/**
 * How the SDK compiles an emulator's guest code: on the compiler thread at `port`, or here
 * without one. Returns what `compilation` says.
 */
export const compileGuestCode = (cpu, port) =>
  port === undefined ? compileGuestCodeSynchronously(cpu) : compileGuestCodeOffThread(cpu, port)
