/**
 * A guest that dies surfaces as a MachineError with the console tail, and the sandbox
 * reports itself not ready. Each case kills its VM, so each gets its own layer; the same
 * cases run live (test/faults.live.test.ts) and replayed (test/faults.replay.test.ts).
 */
import { expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { V86Box } from "../../src/index.ts"

export interface FaultCase {
  readonly name: string
  readonly command: string
  readonly reason: RegExp
}

export const faultCases: ReadonlyArray<FaultCase> = [
  { name: "kernel-panic", command: "echo c > /proc/sysrq-trigger", reason: /panicked[\s\S]*sysrq/ },
  // Without ACPI in the guest kernel, a power-off ends in a halt.
  { name: "power-off", command: "poweroff -f", reason: /powered off|halted/ },
  { name: "agent-killed", command: "kill -9 $PPID", reason: /agent exited/ }
]

export const faultSuite = (
  test: typeof it.live,
  layerFor: (fault: FaultCase) => Layer.Layer<V86Box, unknown>
) => {
  for (const fault of faultCases) {
    test(`${fault.name}: a MachineError naming the cause, and the sandbox is no longer ready`, () =>
      Effect.scoped(Effect.gen(function*() {
        const box = Context.get(yield* Layer.build(layerFor(fault)), V86Box)
        const error = yield* Effect.flip(box.exec(fault.command))
        expect(error._tag).toBe("MachineError")
        expect(error.message).toMatch(fault.reason)
        expect((yield* box.status).ready).toBe(false)
        expect((yield* Effect.flip(box.exec("echo too late")))._tag).toBe("MachineError")
      })).pipe(Effect.orDie), 120_000)
  }
}
