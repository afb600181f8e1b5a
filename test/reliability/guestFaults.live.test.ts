/**
 * A guest that misbehaves without dying: a fork bomb is contained and a command that
 * wants more memory than the guest has is OOM-killed, while the agent (and so the
 * sandbox) keeps serving commands. Faults that do kill the machine are in
 * machineFaults.live.test.ts.
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { V86Box } from "../../src/index.ts"
import { agentRssKb, guestProcessCount, report, settledProcessCount } from "./support.ts"

const forkBomb = ":(){ :|:& };:; sleep 100"
const bombTimeoutMillis = 12_000

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("guest faults the sandbox survives", (it) => {
  for (const user of ["root", "user"] as const) {
    it.effect(`a fork bomb as ${user} is contained: other commands run meanwhile, and it ends with its timeout`, () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        const baseline = yield* guestProcessCount(box)
        const started = Date.now()
        const bomb = yield* Effect.fork(box.exec(forkBomb, { user, timeout: bombTimeoutMillis }))
        // Let it fill the process table, then ask for something else.
        yield* Effect.sleep("4 seconds")
        const meanwhile = yield* Effect.either(guestProcessCount(box))
        const meanwhileAnsweredAt = Date.now() - started
        const bombError = yield* Effect.flip(Fiber.join(bomb))
        const bombEndedAt = Date.now() - started
        const count = yield* settledProcessCount(box, baseline)
        report(`fork bomb (${user})`, {
          processesDuringBomb: meanwhile._tag === "Right" ? meanwhile.right : meanwhile.left.message,
          meanwhileAnsweredAtMillis: meanwhileAnsweredAt,
          bombTimeoutMillis,
          bombEndedAtMillis: bombEndedAt,
          ended: bombError._tag,
          processesAfter: count,
          baseline
        })
        expect(bombError._tag).toBe("CommandTimeout")
        // Contained: the other command ran while the bomb's copies were alive, not after
        // the bomb's timeout had killed them.
        expect(meanwhile._tag === "Right" ? meanwhile.right : meanwhile.left._tag).toBeGreaterThan(baseline + 10)
        expect(count).toBe(baseline)
        expect((yield* box.exec("echo next")).stdout).toBe("next\n")
      }), 180_000)
  }

  it.effect("each command has its own cgroup capped at 256 processes, whichever way it starts", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      // The group's pids.max as the command sees it; `$$` makes the agent start a real bash -c.
      const cap = "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/pids.max"
      const results = [
        yield* box.exec(cap),
        yield* box.exec(`: $$; ${cap}`),
        yield* box.exec(cap, { user: "user" })
      ]
      expect(results.map((result) => result.stdout)).toEqual(["256\n", "256\n", "256\n"])
      // Two commands at once are in two groups.
      const [a, b] = yield* Effect.all([box.exec("cat /proc/self/cgroup; sleep 1"), box.exec("cat /proc/self/cgroup; sleep 1")], {
        concurrency: 2
      })
      expect(a!.stdout).toMatch(/^0::\/command-\d+\n$/)
      expect(a!.stdout).not.toBe(b!.stdout)
    }), 120_000)

  it.effect("a command that allocates more than guest RAM is OOM-killed; the agent survives", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const agentBefore = yield* agentRssKb(box)
      // Doubles a bash string until the kernel has no memory left for it.
      // On a busy host the guest can take minutes of reclaiming before the OOM killer acts.
      const hog = yield* box.exec("x=a; while :; do x=$x$x; done", { timeout: "300 seconds" })
      const log = yield* box.exec("dmesg | grep -c 'Out of memory: Killed process'")
      const agentAfter = yield* agentRssKb(box)
      report("out of memory", { hog: { exitCode: hog.exitCode, signal: hog.signal }, agentRssKb: [agentBefore, agentAfter] })
      expect(hog).toMatchObject({ exitCode: 137, signal: "SIGKILL" })
      expect(Number(log.stdout.trim())).toBeGreaterThan(0)
      expect((yield* box.exec("echo next")).stdout).toBe("next\n")
      expect((yield* box.status).ready).toBe(true)
    }), 400_000)
})
