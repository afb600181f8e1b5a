/**
 * Streaming output: `box.start` hands back the command's stdout and stderr as Streams,
 * so lines are printed as the guest writes them, not when the command ends. Closing the
 * scope of a command that still runs kills it.
 *
 *   npx tsx examples/streaming.ts
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { V86Box } from "../src/index.ts"

const lines = (bytes: Stream.Stream<Uint8Array, unknown>) => bytes.pipe(Stream.decodeText(), Stream.splitLines)

const program = Effect.gen(function*() {
  const box = yield* V86Box
  const startedAt = Date.now()
  const print = (label: string) => (line: string) => Console.log(`+${String(Date.now() - startedAt).padStart(5)} ms  ${label}  ${line}`)

  // A build-like command: progress on stdout, a warning on stderr, both as they happen.
  const exitCode = yield* Effect.scoped(Effect.gen(function*() {
    const build = yield* box.start(
      "for step in fetch compile link; do echo \"$step…\"; sleep 0.3; done; echo 'warning: 1 unused variable' >&2; echo done"
    )
    yield* Effect.all([
      Stream.runForEach(lines(build.stdout), print("stdout")),
      Stream.runForEach(lines(build.stderr), print("stderr"))
    ], { concurrency: "unbounded" })
    return yield* build.exitCode
  }))
  yield* Console.log(`exit code ${exitCode}`)

  // An endless command: take the first three lines, then leave the scope, which kills it.
  const firstLines = yield* Effect.scoped(Effect.gen(function*() {
    const ticker = yield* box.start("i=0; while true; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done")
    return yield* lines(ticker.stdout).pipe(Stream.take(3), Stream.runCollect)
  }))
  yield* Console.log(`first lines of an endless command: ${[...firstLines].join(", ")} (then it was killed)`)
  const left = yield* box.exec("pgrep -c -f 'tic[k]' || true") // [k]: the pattern does not match its own bash
  yield* Console.log(`ticker processes left in the guest: ${left.stdout.trim()}`)
})

Effect.runPromise(program.pipe(Effect.provide(V86Box.layer()))).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
