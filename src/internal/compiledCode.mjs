// Carrying the guest code v86 compiled from one emulator to a new one, in this process or
// another (the trained state: src/internal/trainedState.ts). Plain JavaScript: the
// emulator's worker imports it.
//
// Why: v86 compiles a guest page only after it ran ~200,000 instructions interpreted, and
// a saved state keeps no compiled code, so a new emulator's commands get faster for
// hundreds of commands (`exec("true")` p50 ~10-12 ms over a new emulator's commands
// 11-210 on a busy host, ~6-8 with the code carried over; docs/profiling.md).
//
// What is carried: v86's own memory outside guest RAM (its registers, TLB and JIT tables:
// which page's code is in which slot of its function table) and, for every filled slot,
// the module's bytes and V8's machine code for it. V8 saves and loads machine code only
// through its test functions (`%SerializeWasmModule`, `%DeserializeWasmModule`); what
// it saves loads only under the same V8 build, CPU features and flags (else it returns
// nothing, and the machine resumes without the code), and it must be TurboFan code, all
// compiled: serializing anything else is a fatal error of the process (checked first).
import { createHash } from "node:crypto"
import { closeSync, openSync, readSync } from "node:fs"
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

/** The offsets of v86's own pages in `memory` (all of its wasm memory): all but guest RAM's. */
function* enginePageOffsets(memory, guest) {
  for (let offset = 0; offset < memory.length; offset += PAGE_BYTES) {
    if (offset < guest.start || offset >= guest.end) yield offset
  }
}

/** v86's own memory (all but guest RAM), as its non-zero pages. */
const engineMemory = (cpu) => {
  const memory = new Uint8Array(cpu.wasm_memory.buffer)
  const guest = guestRange(cpu)
  const pages = []
  for (const offset of enginePageOffsets(memory, guest)) {
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
 * A stand-in for a module not loaded yet: a function of v86's JIT signature, `f(state)`,
 * that calls `e.load(slot, state)` (`slot`: an imported global). One compiled module,
 * instantiated per slot.
 *
 *   (module (import "e" "load" (func (param i32 i32))) (import "e" "slot" (global i32))
 *     (func (export "f") (param i32) (call 0 (global.get 0) (local.get 0))))
 */
const STAND_IN = Uint8Array.of(
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  0x01, 0x0a, 0x02, 0x60, 0x02, 0x7f, 0x7f, 0x00, 0x60, 0x01, 0x7f, 0x00,
  0x02, 0x14, 0x02, 0x01, 0x65, 0x04, 0x6c, 0x6f, 0x61, 0x64, 0x00, 0x00, 0x01, 0x65, 0x04, 0x73, 0x6c, 0x6f, 0x74, 0x03, 0x7f, 0x00,
  0x03, 0x02, 0x01, 0x01,
  0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x01,
  0x0a, 0x0a, 0x01, 0x08, 0x00, 0x23, 0x00, 0x20, 0x00, 0x10, 0x00, 0x0b
)

/** A module's bytes and machine code (as `read` gives them) as V8 loads them, or undefined if V8 will not. */
const deserialized = ({ wire, code }, flags) => {
  const loaded = withOptimizingCompiler(flags.cells, flags, () =>
    callNative(flags.cells, flags.lock, "(c, w) => %DeserializeWasmModule(c, w)", [code, wire]))
  return loaded instanceof WebAssembly.Module ? loaded : undefined
}

/** A saved module as V8 loads its machine code, or undefined if V8 will not. `read` gives its bytes, checked. */
export const savedModule = (entry, read, flags) => deserialized(read(entry), flags)

/**
 * A saved module's code: its machine code loaded, or, if V8 will not, its bytes (read
 * once for both) compiled here (slower code, still right).
 */
const moduleOf = (entry, read, flags) => {
  const saved = read(entry)
  return deserialized(saved, flags) ?? new WebAssembly.Module(saved.wire)
}

const entryOf = (cpu, module) => new WebAssembly.Instance(module, { e: cpu.jit_imports }).exports.f

/**
 * Whether V8 loads the saved machine code here (the same V8 build, CPU features and
 * flags): the first module is loaded now. If not, the emulator resumes without the code.
 */
export const probeCode = (cpu, trained, read, flags) => {
  if (trained.engine.guestStart !== guestRange(cpu).start) return { failed: "v86 lays out its memory differently" }
  const [first] = trained.modules
  if (first === undefined) return { loaded: [] }
  const module = savedModule(first, read, flags)
  return module !== undefined ? { loaded: [{ slot: first.slot, module }] } : { failed: "V8 would not load the saved machine code" }
}

/**
 * Puts the saved v86 memory into the emulator, right after its state (saved at the same
 * moment) was restored and before it runs, and fills v86's table: the modules `loaded`
 * as they are, every other one as a stand-in that loads it when v86 first calls it
 * (reading ~100 modules, ~30 MB, up front cost ~0.5 s before the first command). Each is
 * also asked for ahead from `loadAhead(entry, loaded)` (a compiler thread, which loads it
 * on another core): whichever comes first fills the slot. `done` is called once none is
 * left to load.
 */
export const installCode = (cpu, trained, loaded, read, flags, loadAhead, done) => {
  const { engine } = trained
  const memory = cpu.wasm_memory
  if (memory.buffer.byteLength < engine.byteLength) memory.grow((engine.byteLength - memory.buffer.byteLength) / 65536)
  const bytes = new Uint8Array(memory.buffer)
  const guest = guestRange(cpu)
  const zeroPage = new Uint8Array(PAGE_BYTES)
  let next = 0
  for (const offset of enginePageOffsets(bytes, guest)) {
    const page = offset / PAGE_BYTES
    const wanted = engine.pages[next] === page
      ? engine.packed.subarray(next * PAGE_BYTES, ++next * PAGE_BYTES)
      : zeroPage
    const current = bytes.subarray(offset, offset + PAGE_BYTES)
    if (Buffer.compare(current, wanted) !== 0) current.set(wanted)
  }

  const table = cpu.wm.wasm_table
  const waiting = new Map(trained.modules.map((entry) => [entry.slot, entry]))
  for (const { slot } of loaded) waiting.delete(slot)
  const originals = { jit_clear_func: cpu.jit_clear_func, jit_clear_all_funcs: cpu.jit_clear_all_funcs }
  let finished = false
  const finish = () => {
    if (finished) return
    finished = true
    waiting.clear()
    Object.assign(cpu, originals)
    done()
  }
  const settled = (slot) => {
    waiting.delete(slot)
    if (waiting.size === 0) finish()
  }
  // A slot v86 clears before its module was loaded needs it no more.
  cpu.jit_clear_func = function(slot) {
    settled(slot)
    return originals.jit_clear_func.call(this, slot)
  }
  cpu.jit_clear_all_funcs = function() {
    finish()
    return originals.jit_clear_all_funcs.call(this)
  }
  const load = (slot, state) => {
    const run = entryOf(cpu, moduleOf(waiting.get(slot), read, flags))
    table.set(slot + JIT_TABLE_OFFSET, run)
    settled(slot)
    run(state)
  }
  const standIn = new WebAssembly.Module(STAND_IN)
  for (const { slot, module } of loaded) table.set(slot + JIT_TABLE_OFFSET, entryOf(cpu, module))
  for (const slot of waiting.keys()) {
    const slotNumber = new WebAssembly.Global({ value: "i32" }, slot)
    table.set(slot + JIT_TABLE_OFFSET, new WebAssembly.Instance(standIn, { e: { load, slot: slotNumber } }).exports.f)
  }
  if (waiting.size === 0) return finish()
  for (const entry of waiting.values()) {
    loadAhead(entry, (module) => {
      if (waiting.get(entry.slot) !== entry) return
      table.set(entry.slot + JIT_TABLE_OFFSET, entryOf(cpu, module))
      settled(entry.slot)
    })
  }
}

/**
 * Where this thread reads modules into, reused: each module read into buffers of its own
 * left ~50 MB of freed buffers per emulator that the host did not get back (RSS per idle
 * sandbox 145-150 MB instead of ~83). The machine code goes into a resizable ArrayBuffer,
 * sized to each module: V8 loads a whole ArrayBuffer.
 */
const readBuffers = { wire: new Uint8Array(0), code: new ArrayBuffer(0, { maxByteLength: 64 * 1024 * 1024 }) }

/**
 * Reads saved modules from the trained state's file (`entries`: where each is, and the
 * sha256 of its bytes and machine code), checking each: damaged machine code could crash
 * the process. What `read` returns is good until the next read (this thread's buffers):
 * `wire`, a Uint8Array, and `code`, an ArrayBuffer. A damaged module throws, after
 * `damaged()`. `close` once all are read.
 */
export const codeReader = (path, damaged) => {
  const file = openSync(path, "r")
  const read = (entry) => {
    if (readBuffers.wire.length < entry.wireBytes) readBuffers.wire = new Uint8Array(entry.wireBytes)
    const wire = readBuffers.wire.subarray(0, entry.wireBytes)
    const { code } = readBuffers
    code.resize(entry.codeBytes)
    const codeBytes = new Uint8Array(code)
    const intact = readSync(file, wire, 0, wire.length, entry.offset) === wire.length &&
      readSync(file, codeBytes, 0, codeBytes.length, entry.offset + entry.wireBytes) === codeBytes.length &&
      createHash("sha256").update(wire).update(codeBytes).digest("hex") === entry.sha256
    if (!intact) {
      damaged()
      throw new Error(`the trained state ${path} is damaged (the module for slot ${entry.slot})`)
    }
    return { wire, code }
  }
  return { read, close: () => closeSync(file) }
}
