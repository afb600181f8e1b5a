/**
 * `v86box run [options] SCRIPT [ARGS...]`: copies a script from the host into a fresh
 * sandbox and runs it with bash, the arguments after it as `$1`, `$2`…; streams its
 * output and exits with its exit code.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import { basename } from "node:path"
import { runInSandbox, stdinFlag } from "./execCommand.ts"
import { sandboxOptions } from "./sandboxOptions.ts"
import { UsageError } from "./UsageError.ts"

/** Quotes one word for bash: inside single quotes everything is literal but `'` itself. */
export const shellQuote = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`

export const runCommand = Command.make(
  "run",
  {
    ...sandboxOptions,
    stdin: stdinFlag,
    script: Args.file({ name: "script", exists: "yes" }).pipe(Args.withDescription("A bash script on the host.")),
    args: Args.text({ name: "args" }).pipe(
      Args.repeated,
      Args.withDescription(
        "Passed to the script as $1, $2…; put them after `--` if they look like v86box's options. " +
          "Example: v86box run build.sh release -- --verbose"
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const hostFs = yield* FileSystem.FileSystem
      const script = yield* hostFs.readFile(options.script).pipe(
        Effect.mapError((error) => new UsageError({ reason: `cannot read the script ${options.script}: ${error.message}` }))
      )
      yield* runInSandbox(options, (box) =>
        Effect.gen(function*() {
          // Run from a file, not `bash -c`, so $0 and bash's error messages name the script.
          const dir = yield* box.fs.makeTempDirectory({ prefix: "v86box-run-" })
          const guestPath = `${dir}/${basename(options.script)}`
          yield* box.fs.writeFile(guestPath, script)
          return ["bash", guestPath, ...options.args].map(shellQuote).join(" ")
        }))
    })
).pipe(
  Command.withDescription(
    "Run a bash script from the host in a fresh sandbox, with arguments: its output streams to yours, " +
      "and v86box exits with its exit code."
  )
)
