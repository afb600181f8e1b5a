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

  it.effect("each command has its own cgroup capped at 128 processes, whichever way it starts, and all are capped below guest RAM", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      // The group's pids.max as the command sees it: forked from the fork server, in a
      // real bash -c (SHLVL is a variable the agent leaves to a starting bash), as uid 1000.
      const cap = "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/pids.max"
      const results = [
        yield* box.exec(cap),
        yield* box.exec(cap, { env: { SHLVL: "5" } }),
        yield* box.exec(cap, { user: "user" })
      ]
      expect(results.map((result) => result.stdout)).toEqual(["128\n", "128\n", "128\n"])
      // Two commands at once are in two groups.
      const [a, b] = yield* Effect.all([box.exec("cat /proc/self/cgroup; sleep 1"), box.exec("cat /proc/self/cgroup; sleep 1")], {
        concurrency: 2
      })
      expect(a!.stdout).toMatch(/^0::\/commands\/command-\d+\n$/)
      expect(a!.stdout).not.toBe(b!.stdout)
      // All commands together are capped below guest RAM, leaving room for the agent and
      // the page cache of the programs it runs.
      const memory = yield* box.exec("cat /sys/fs/cgroup/commands/memory.max; awk '/MemTotal/ { print $2 * 1024 }' /proc/meminfo")
      const [memoryMax, total] = memory.stdout.trim().split("\n").map(Number)
      expect(memoryMax).toBeLessThan(total!)
      expect(memoryMax).toBeGreaterThan(total! / 2)
    }), 120_000)

  it.effect("a command that allocates without end is OOM-killed at the commands' memory cap; the agent survives", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const agentBefore = yield* agentRssKb(box)
      // Doubles a bash string until the commands' memory cap (below guest RAM) stops it:
      // the OOM killer acts in the commands' cgroup while the rest of the guest still
      // has room, instead of after minutes of the whole guest thrashing.
      const hog = yield* box.exec("x=a; while :; do x=$x$x; done", { timeout: "120 seconds" })
      const log = yield* box.exec("dmesg | grep -c 'Memory cgroup out of memory: Killed process'")
      const agentAfter = yield* agentRssKb(box)
      report("out of memory", { hog: { exitCode: hog.exitCode, signal: hog.signal }, agentRssKb: [agentBefore, agentAfter] })
      expect(hog).toMatchObject({ exitCode: 137, signal: "SIGKILL" })
      expect(Number(log.stdout.trim())).toBeGreaterThan(0)
      expect((yield* box.exec("echo next")).stdout).toBe("next\n")
      expect((yield* box.status).ready).toBe(true)
    }), 200_000)
})
