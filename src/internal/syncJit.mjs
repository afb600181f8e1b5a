// v86's JIT, made to install compiled guest code at once. Plain JavaScript: the emulator's
// worker imports it (and bench/boot.ts, to boot the way the SDK does).

/**
 * v86 compiles a hot guest page to a small WebAssembly module with the asynchronous
 * `WebAssembly.instantiate`, and interprets the page until that settles. On this thread,
 * which v86 keeps busy, it settles late: measured 400-480 ms for the first module of a
 * boot and 15-150 ms for later ones, while compiling the same bytes synchronously took
 * 1-10 ms. Cold code (a boot, a resumed guest's first commands, a program's first run)
 * spends that time interpreted, several times slower. So the module is compiled here and
 * now, and installed from a microtask: v86 holds its JIT state while it calls this
 * function and cannot take the "finished" call re-entrantly (its own SYNC_COMPILATION
 * switch does that and panics).
 */
export const compileGuestCodeSynchronously = (cpu) => {
  const JIT_TABLE_OFFSET = 1024 // v86's WASM_TABLE_OFFSET (src/const.js)
  cpu.codegen_finalize = function(tableIndex, start, stateFlags, pointer, length) {
    const code = new Uint8Array(this.wasm_memory.buffer, pointer >>> 0, length >>> 0)
    const instance = new WebAssembly.Instance(new WebAssembly.Module(code), { e: this.jit_imports })
    queueMicrotask(() => {
      this.wm.wasm_table.set(tableIndex + JIT_TABLE_OFFSET, instance.exports.f)
      this.codegen_finalize_finished(tableIndex, start, stateFlags)
    })
  }
}
