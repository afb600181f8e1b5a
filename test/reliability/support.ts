/**
 * Shared by the reliability suite (test/reliability/*.live.test.ts, docs/reliability.md):
 * the scale knob, host memory sampling, guest process counts and leak checks.
 *
 * `V86BOX_RELIABILITY_SCALE=full` (set by `npm run test:reliability`) runs the counts the
 * issue promises; anything else (the normal `npm test`) runs a bounded subset.
 */
import * as Effect from "effect/Effect"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import type { V86Box } from "../../src/index.ts"
import { runningWorkerCount } from "../../src/internal/v86Machine.ts"

export const fullScale = process.env.V86BOX_RELIABILITY_SCALE === "full"

/** The count to run: the promised one at full scale, a small one in the normal suite. */
export const scaled = (counts: { readonly full: number; readonly ci: number }): number =>
  fullScale ? counts.full : counts.ci

/** Prints a measured number for docs/reliability.md, tagged so it is easy to grep from the log. */
export const report = (test: string, facts: Record<string, unknown>): void => {
  console.log(`[reliability] ${test}: ${JSON.stringify({ scale: fullScale ? "full" : "ci", ...facts })}`)
}

// A full collection before each RSS sample makes samples comparable (V8 keeps garbage
// around until it needs room). `--expose-gc` may be set after start-up; `gc` is then
// reachable from a fresh context.
setFlagsFromString("--expose-gc")
const collectGarbage = runInNewContext("gc") as () => void

/** This process's resident memory in bytes (the emulator's worker thread included), after a GC when exposed. */
export const hostRss = (): number => {
  collectGarbage()
  return process.memoryUsage().rss
}

/**
 * Samples host RSS every `everyMillis` while `effect` runs; returns its result (or
 * failure) and the highest RSS seen above the RSS at the start.
 */
export const withRssSampling = <A, E, R>(effect: Effect.Effect<A, E, R>, everyMillis = 20) =>
  Effect.gen(function*() {
    const before = process.memoryUsage().rss
    let peak = before
    const timer = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss)
    }, everyMillis)
    const result = yield* Effect.either(effect).pipe(Effect.ensuring(Effect.sync(() => clearInterval(timer))))
    peak = Math.max(peak, process.memoryUsage().rss)
    return { result, growthBytes: peak - before }
  })

export const megabytes = (bytes: number): number => Math.round((bytes / 1e6) * 10) / 10

/**
 * Guest processes that are not kernel threads (not kthreadd, PID 2, nor its children),
 * counted with bash builtins only, so counting forks nothing but the bash that counts.
 * Kernel workers come and go on their own; user processes must not.
 */
export const guestProcessCountScript = [
  "n=0",
  "for d in /proc/[0-9]*; do",
  "  read -r s < \"$d/stat\" 2>/dev/null || continue",
  "  s=${s##*) }; set -- $s",
  "  [ \"${d#/proc/}\" = 2 ] || [ \"$2\" = 2 ] || n=$((n + 1))",
  "done",
  "echo $n"
].join("\n")

export const guestProcessCount = (box: V86Box.Service) =>
  Effect.map(box.exec(guestProcessCountScript), (result) => Number(result.stdout.trim()))

/**
 * Waits (bounded) for the guest's process count to come back to `baseline`: processes
 * killed with their group are reaped by the agent a moment after the command's exit.
 * Returns the last count seen.
 */
export const settledProcessCount = (box: V86Box.Service, baseline: number) =>
  Effect.gen(function*() {
    let count = yield* guestProcessCount(box)
    for (let attempt = 0; attempt < 20 && count !== baseline; attempt++) {
      yield* Effect.sleep("250 millis")
      count = yield* guestProcessCount(box)
    }
    return count
  })

/**
 * Resident memory in kB of the guest's long-lived processes: the agent (PID 1 and its
 * v86box-agent children) and the bash it forks commands from; not the bash measuring.
 */
export const agentRssKb = (box: V86Box.Service) =>
  Effect.map(
    box.exec([
      "total=0",
      "for d in /proc/[0-9]*; do",
      "  read -r name < \"$d/comm\" 2>/dev/null || continue",
      "  [ \"$name\" = v86box-agent ] || { [ \"$name\" = bash ] && [ \"${d#/proc/}\" != $$ ]; } || continue",
      "  while read -r key value unit; do [ \"$key\" = VmRSS: ] && total=$((total + value)); done < \"$d/status\"",
      "done",
      "echo $total"
    ].join("\n")),
    (result) => Number(result.stdout.trim())
  )

/** Handles and requests that keep Node's event loop alive, by kind (`Timeout`, `MessagePort`…). */
export const activeResources = (): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1)
  return counts
}

/** Kinds of which more are active now than in `before`, with how many more. */
export const resourcesAbove = (before: Map<string, number>, now: Map<string, number>): Record<string, number> => {
  const extra: Record<string, number> = {}
  for (const [kind, count] of now) {
    const more = count - (before.get(kind) ?? 0)
    if (more > 0) extra[kind] = more
  }
  return extra
}

/**
 * Waits (bounded, 5 s) until no emulator worker runs and no more handles or timers are
 * active than in `before`; returns what is still left over.
 */
export const leftoversAfter = (before: Map<string, number>) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 100; attempt++) {
      const extra = resourcesAbove(before, activeResources())
      if (runningWorkerCount() === 0 && Object.keys(extra).length === 0) break
      yield* Effect.sleep("50 millis")
    }
    return { workers: runningWorkerCount(), resources: resourcesAbove(before, activeResources()) }
  })
