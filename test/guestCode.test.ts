/**
 * Guest code compilation (src/internal/guestCode.mjs, guestCodeCompiler.ts) without a VM:
 * a stand-in for v86's CPU hands over module bytes as v86's JIT does, and must get them
 * back installed in its table, compiled by the compiler thread, or on its own thread once
 * that thread is gone.
 */
import { afterEach, describe, expect, it } from "vitest"
import { compileGuestCodeOffThread } from "../src/internal/guestCode.mjs"
import * as GuestCodeCompiler from "../src/internal/guestCodeCompiler.ts"

/** `(module (func (export "f")))`: the shape of v86's guest modules, minus the body. */
const moduleBytes = Uint8Array.of(
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
  0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // one type: () -> ()
  0x03, 0x02, 0x01, 0x00, // one function of that type
  0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // exported as "f"
  0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b // its body: nothing
)

interface Finished {
  readonly tableIndex: number
  readonly start: number
  readonly stateFlags: number
}

/** What guestCode.mjs uses of v86's CPU, with the module bytes in its memory at 64. */
const fakeCpu = () => {
  const memory = new WebAssembly.Memory({ initial: 1 })
  new Uint8Array(memory.buffer).set(moduleBytes, 64)
  const finished: Array<Finished> = []
  let onFinished = () => {}
  const cpu = {
    wasm_memory: memory,
    jit_imports: {},
    wm: { wasm_table: new WebAssembly.Table({ element: "anyfunc", initial: 1024 + 900 }) },
    codegen_finalize: (_tableIndex: number, _start: number, _stateFlags: number, _pointer: number, _length: number) => {},
    codegen_finalize_finished: (tableIndex: number, start: number, stateFlags: number) => {
      finished.push({ tableIndex, start, stateFlags })
      onFinished()
    }
  }
  /** Hands a module to `codegen_finalize` as v86 does, and waits for its "finished". */
  const generate = (tableIndex: number) =>
    new Promise<Finished>((resolve) => {
      onFinished = () => resolve(finished.at(-1)!)
      cpu.codegen_finalize(tableIndex, 0x1000 * tableIndex, 7, 64, moduleBytes.length)
    })
  return { cpu, generate }
}

afterEach(() => GuestCodeCompiler.stopForTesting())

describe("guest code", () => {
  it("is compiled by the compiler thread and installed in v86's table", async () => {
    const { cpu, generate } = fakeCpu()
    const before = GuestCodeCompiler.compiledCount()
    const port = GuestCodeCompiler.connect()!
    compileGuestCodeOffThread(cpu, port)
    // Nothing is installed while v86 is still inside codegen_finalize.
    const finished = generate(5)
    expect(cpu.wm.wasm_table.get(1024 + 5)).toBeNull()
    expect(await finished).toEqual({ tableIndex: 5, start: 0x5000, stateFlags: 7 })
    expect(typeof cpu.wm.wasm_table.get(1024 + 5)).toBe("function")
    expect(GuestCodeCompiler.compiledCount()).toBe(before + 1)
    port.close()
  })

  it("is compiled on the emulator's own thread once the compiler thread is gone, and the next emulator gets a new one", async () => {
    const first = fakeCpu()
    const port = GuestCodeCompiler.connect()!
    compileGuestCodeOffThread(first.cpu, port)
    await first.generate(1)
    const closed = new Promise((resolve) => port.once("close", resolve))
    await GuestCodeCompiler.stopForTesting()
    await closed
    const before = GuestCodeCompiler.compiledCount()
    expect(await first.generate(2)).toEqual({ tableIndex: 2, start: 0x2000, stateFlags: 7 })
    expect(typeof first.cpu.wm.wasm_table.get(1024 + 2)).toBe("function")
    expect(GuestCodeCompiler.compiledCount()).toBe(before)

    const second = fakeCpu()
    const next = GuestCodeCompiler.connect()!
    compileGuestCodeOffThread(second.cpu, next)
    await second.generate(3)
    expect(GuestCodeCompiler.compiledCount()).toBe(before + 1)
    next.close()
  })
})
