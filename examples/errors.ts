/**
 * Timeouts and errors: a non-zero exit code is a result; a command that runs too long or
 * writes too much is killed and fails with a typed error (`CommandTimeout`,
 * `OutputLimitExceeded`) that keeps its output so far; bad options fail before anything
 * runs (`InvalidOptions`). `Effect.catchTags` handles each by name, and the type shows
 * what is left (`MachineError`: the sandbox itself failed).
 *
 *   npx tsx examples/errors.ts
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { type ExecOptions, V86Box } from "../src/index.ts"

const describe = (box: V86Box.Service, command: string, options?: ExecOptions) =>
  box.exec(command, options).pipe(
    Effect.map((result) => `exit code ${result.exitCode}, stderr ${JSON.stringify(result.stderr)}`),
    Effect.catchTags({
      CommandTimeout: (error) =>
        Effect.succeed(`CommandTimeout: killed after ${error.timeoutMillis} ms, stdout so far ${JSON.stringify(error.stdout)}`),
      OutputLimitExceeded: (error) =>
        Effect.succeed(
          `OutputLimitExceeded: killed past ${error.maxOutputBytes} bytes, kept ${error.stdout.length} bytes of stdout`
        ),
      InvalidOptions: (error) => Effect.succeed(`InvalidOptions: ${error.issues.join("; ")}`)
    })
  ) // Effect<string, MachineError>: only a failure of the sandbox itself is left

const program = Effect.gen(function*() {
  const box = yield* V86Box
  yield* Console.log(`ls /nope          → ${yield* describe(box, "ls /nope")}`)
  yield* Console.log(`sleep, 5 s limit  → ${yield* describe(box, "echo working; sleep 60", { timeout: "5 seconds" })}`)
  yield* Console.log(`yes, 10 KB limit  → ${yield* describe(box, "yes", { maxOutputBytes: 10_000 })}`)
  yield* Console.log(`empty cwd         → ${yield* describe(box, "pwd", { cwd: "" })}`)
  const after = yield* box.exec("echo still fine")
  yield* Console.log(`the sandbox after → ${after.stdout.trim()}`)
})

Effect.runPromise(program.pipe(Effect.provide(V86Box.layer()))).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
