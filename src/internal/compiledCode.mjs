// Carrying the guest code v86 compiled from one emulator to a new one, in this process or
// another (the trained state: src/internal/trainedState.ts). Plain JavaScript: the
// emulator's worker imports it.
//
// Why: v86 compiles a guest page only after it ran ~200,000 instructions interpreted, and
// a saved state keeps no compiled code, so a new emulator's commands get faster for
// hundreds of commands (`exec("true")` p50 ~9 ms over a new emulator's commands 11-210,
// ~5 with the code carried over; docs/profiling.md).
//
// What is carried: v86's own memory outside guest RAM (its registers, TLB and JIT tables:
// which page's code is in which slot of its function table) and, for every filled slot,
// the module's bytes and V8's machine code for it. V8 saves and loads machine code only
// through its test functions (`%SerializeWasmModule`, `%DeserializeWasmModule`); what
// it saves loads only under the same V8 build, CPU features and flags (else it returns
// nothing, and the machine resumes without the code), and it must be TurboFan code, all
// compiled: serializing anything else is a fatal error of the process (checked first).
import { JIT_TABLE_OFFSET } from "./guestCode.mjs"
import { callNative, withOptimizingCompiler } from "./v8Flags.mjs"

const PAGE_BYTES = 4096

/**
 * Keeps the bytes of every module v86 puts in its table, by slot, as v86 fills and clears
 * slots: what `saveCode` needs (`modules`), until `stop`. Costs a copy of each module
 * (~9 MB for 120 modules), so only an emulator being trained records.
 */
export const recordModules = (cpu) => {
  const modules = new Map()
  const originals = {
    codegen_finalize: cpu.codegen_finalize,
    jit_clear_func: cpu.jit_clear_func,
    jit_clear_all_funcs: cpu.jit_clear_all_funcs
  }
  cpu.codegen_finalize = function(slot, start, stateFlags, pointer, length) {
    modules.set(slot, new Uint8Array(this.wasm_memory.buffer, pointer >>> 0, length >>> 0).slice())
    return originals.codegen_finalize.call(this, slot, start, stateFlags, pointer, length)
  }
  cpu.jit_clear_func = function(slot) {
    modules.delete(slot)
    return originals.jit_clear_func.call(this, slot)
  }
  cpu.jit_clear_all_funcs = function() {
    modules.clear()
    return originals.jit_clear_all_funcs.call(this)
  }
  const stop = () => {
    Object.assign(cpu, originals)
    modules.clear()
  }
  return { modules, stop }
}

/** Where guest RAM lies in v86's memory; the rest is v86's own. */
const guestRange = (cpu) => {
  const start = cpu.mem8.byteOffset
  return { start, end: start + cpu.memory_size[0] }
}

/** v86's own memory (all but guest RAM), as its non-zero pages. */
const engineMemory = (cpu) => {
  const memory = new Uint8Array(cpu.wasm_memory.buffer)
  const guest = guestRange(cpu)
  const pages = []
  for (let offset = 0; offset < memory.length; offset += PAGE_BYTES) {
    if (offset >= guest.start && offset < guest.end) continue
    const page = memory.subarray(offset, offset + PAGE_BYTES)
    if (page.some((byte) => byte !== 0)) pages.push(offset / PAGE_BYTES)
  }
  const packed = new Uint8Array(pages.length * PAGE_BYTES)
  pages.forEach((page, index) => packed.set(memory.subarray(page * PAGE_BYTES, (page + 1) * PAGE_BYTES), index * PAGE_BYTES))
  return { byteLength: memory.length, guestStart: guest.start, pages: Uint32Array.from(pages), packed }
}

/**
 * The emulator's code, to go with the state saved at the same moment (the caller keeps
 * the emulator stopped throughout): v86's memory and each recorded module with its
 * machine code. Throws if the code cannot be saved.
 */
export const saveCode = (cpu, { modules }, flags) => {
  const engine = engineMemory(cpu)
  const saved = withOptimizingCompiler(flags.cells, flags, () =>
    [...modules].map(([slot, wire]) => {
      // V8 shares compiled modules by their bytes: this is the compiler thread's code.
      const module = new WebAssembly.Module(wire)
      const entry = new WebAssembly.Instance(module, { e: cpu.jit_imports }).exports.f
      if (callNative(flags.cells, flags.lock, "(f) => %IsTurboFanFunction(f)", [entry]) !== true) {
        throw new Error(`the module in slot ${slot} is not optimized code`)
      }
      const code = callNative(flags.cells, flags.lock, "(m) => %SerializeWasmModule(m)", [module])
      if (!(code instanceof ArrayBuffer)) throw new Error(`V8 did not serialize the module in slot ${slot}`)
      return { slot, wire, code: new Uint8Array(code) }
    }))
  return { engine, modules: saved }
}

/**
 * The saved modules loaded as V8 modules, ready for `installCode`, or why they cannot be
 * (another V8, CPU or flags; another v86 memory layout). Nothing of the emulator is
 * touched: on failure it resumes its state without the code.
 */
export const loadCode = (cpu, code, flags) => {
  if (code.engine.guestStart !== guestRange(cpu).start) return { failed: "v86 lays out its memory differently" }
  const loaded = withOptimizingCompiler(flags.cells, flags, () => {
    const modules = []
    for (const { slot, wire, code: machineCode } of code.modules) {
      const buffer = machineCode.buffer.slice(machineCode.byteOffset, machineCode.byteOffset + machineCode.byteLength)
      const module = callNative(flags.cells, flags.lock, "(c, w) => %DeserializeWasmModule(c, w)", [buffer, new Uint8Array(wire)])
      if (!(module instanceof WebAssembly.Module)) return undefined
      modules.push({ slot, module })
    }
    return modules
  })
  return loaded === undefined ? { failed: "V8 would not load the saved machine code" } : { modules: loaded }
}

/**
 * Puts the saved v86 memory and the loaded modules into the emulator, right after its
 * state (saved at the same moment) was restored and before it runs.
 */
export const installCode = (cpu, code, loaded) => {
  const { engine } = code
  const memory = cpu.wasm_memory
  if (memory.buffer.byteLength < engine.byteLength) memory.grow((engine.byteLength - memory.buffer.byteLength) / 65536)
  const bytes = new Uint8Array(memory.buffer)
  const guest = guestRange(cpu)
  const zeroPage = new Uint8Array(PAGE_BYTES)
  let next = 0
  for (let offset = 0; offset < bytes.length; offset += PAGE_BYTES) {
    if (offset >= guest.start && offset < guest.end) continue
    const page = offset / PAGE_BYTES
    const wanted = engine.pages[next] === page
      ? engine.packed.subarray(next * PAGE_BYTES, ++next * PAGE_BYTES)
      : zeroPage
    const current = bytes.subarray(offset, offset + PAGE_BYTES)
    if (Buffer.compare(current, wanted) !== 0) current.set(wanted)
  }
  for (const { slot, module } of loaded) {
    const instance = new WebAssembly.Instance(module, { e: cpu.jit_imports })
    cpu.wm.wasm_table.set(slot + JIT_TABLE_OFFSET, instance.exports.f)
  }
}
