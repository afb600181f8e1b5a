/**
 * Prepare once, fork many: set a sandbox up (a grader script in it), save it with
 * `box.snapshot()`, then grade several submissions at once on a `V86BoxPool` whose
 * sandboxes are forks of that snapshot. In the default "fresh" mode every submission
 * gets a fork no one used before, so one cannot see or spoil another's files.
 *
 *   npx tsx examples/pool.ts
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { V86Box, V86BoxPool } from "../src/index.ts"

const grader = `#!/bin/bash
# Grades a submitted shell snippet: it must print the sum of the numbers 1..10.
[ -e /tmp/seen ] && { echo "a previous submission leaked into this sandbox"; exit 2; }
touch /tmp/seen
answer=$(bash -c "$1" 2>&1)
[ "$answer" = 55 ] && echo "pass" || { echo "fail: got '$answer'"; exit 1; }
`

const prepare = Effect.gen(function*() {
  const box = yield* V86Box
  yield* box.fs.writeFileString("/opt/grade", grader)
  yield* box.exec("chmod +x /opt/grade")
  return yield* box.snapshot()
}).pipe(Effect.provide(V86Box.layer()))

const submissions = [
  "seq 10 | paste -sd+ | bc",
  "echo $(( 10 * 11 / 2 ))",
  "echo 56",
  "s=0; for i in $(seq 10); do s=$((s+i)); done; echo $s"
]

const program = Effect.gen(function*() {
  const snapshot = yield* prepare
  yield* Console.log(`snapshot of the prepared sandbox: ${(snapshot.bytes.length / 1048576).toFixed(1)} MiB`)

  const grade = Effect.gen(function*() {
    const pool = yield* V86BoxPool
    return yield* Effect.forEach(
      submissions,
      (submission) =>
        Effect.map(pool.exec(`/opt/grade '${submission.replaceAll("'", `'\\''`)}'`), (result) => ({ submission, result })),
      { concurrency: "unbounded" }
    )
  })
  const graded = yield* grade.pipe(Effect.provide(V86BoxPool.layer({ sandbox: { fromSnapshot: snapshot }, size: 2 })))
  for (const { result, submission } of graded) {
    yield* Console.log(`${submission.padEnd(52)} → ${result.stdout.trim()} (exit ${result.exitCode})`)
  }
})

Effect.runPromise(program).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
