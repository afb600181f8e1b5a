/**
 * A guest that dies surfaces as a MachineError with the console tail, fast, and the
 * sandbox reports itself not ready. Each case needs its own VM (it kills it).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { V86Box } from "../src/index.ts"

const killedBy = (command: string) =>
  Effect.scoped(Effect.gen(function*() {
    const box = Context.get(yield* Layer.build(V86Box.layer()), V86Box)
    const started = Date.now()
    const error = yield* Effect.flip(box.exec(command))
    const elapsed = Date.now() - started
    const status = yield* box.status
    const after = yield* Effect.flip(box.exec("echo too late"))
    return { error, elapsed, status, after }
  }))

describe("guest faults", () => {
  it.live("a kernel panic is a MachineError with the kernel's last words", () =>
    Effect.gen(function*() {
      const { error, elapsed, status, after } = yield* killedBy("echo c > /proc/sysrq-trigger")
      expect(error._tag).toBe("MachineError")
      expect(error.message).toContain("panicked")
      expect(error.message).toContain("sysrq")
      expect(elapsed).toBeLessThan(5000)
      expect(status.ready).toBe(false)
      expect(after._tag).toBe("MachineError")
    }), 120_000)

  it.live("a guest power-off is a MachineError", () =>
    Effect.gen(function*() {
      const { error, status } = yield* killedBy("poweroff -f")
      expect(error._tag).toBe("MachineError")
      // Without ACPI in the guest kernel, a power-off ends in a halt.
      expect(error.message).toMatch(/powered off|halted/)
      expect(status.ready).toBe(false)
    }), 120_000)

  it.live("killing the agent is a MachineError", () =>
    Effect.gen(function*() {
      const { error, status } = yield* killedBy("kill -9 $PPID")
      expect(error._tag).toBe("MachineError")
      expect(error.message).toContain("agent exited")
      expect(status.ready).toBe(false)
    }), 120_000)
})
