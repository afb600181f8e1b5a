/**
 * `v86box exec [options] -- COMMAND...`: boots a sandbox, runs the words after `--` as
 * one bash command (as `ssh host COMMAND...` does), streams its stdout and stderr to the
 * host's and exits with its exit code.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import { V86Box } from "../V86Box.ts"
import { setExitCode } from "./exitCode.ts"
import { hostStdin, runStreamed } from "./hostOutput.ts"
import { type SandboxOptions, sandboxOptions, toV86BoxOptions } from "./sandboxOptions.ts"

export const stdinFlag = Options.boolean("stdin").pipe(
  Options.withAlias("i"),
  Options.withDescription("Send the host's stdin to the command (default: the command reads EOF).")
)

/** Runs `command` in a fresh sandbox, streamed to the host, and sets v86box's exit code to its. */
export const runInSandbox = <E>(
  options: SandboxOptions & { readonly stdin: boolean },
  command: (box: V86Box.Service) => Effect.Effect<string, E>
) =>
  Effect.gen(function*() {
    const box = yield* V86Box
    const exitCode = yield* runStreamed(box, yield* command(box), options.stdin ? { stdin: hostStdin } : undefined)
    yield* setExitCode(exitCode)
  }).pipe(Effect.provide(V86Box.layer(toV86BoxOptions(options))))

export const execCommand = Command.make(
  "exec",
  {
    ...sandboxOptions,
    stdin: stdinFlag,
    command: Args.text({ name: "command" }).pipe(
      Args.atLeast(1),
      Args.withDescription(
        "The command and its arguments, after `--`; joined with spaces and run with `bash -c`. " +
          "Example: v86box exec -- 'uname -a; ls /'"
      )
    )
  },
  (options) => runInSandbox(options, () => Effect.succeed(options.command.join(" ")))
).pipe(
  Command.withDescription(
    "Run a bash command in a fresh sandbox: its stdout and stderr stream to yours, and v86box exits with its exit code."
  )
)
