/**
 * `v86box snapshot create FILE [-- SETUP...]`: boots a sandbox, runs an optional setup
 * command in it (streamed, like `exec`), and saves the whole sandbox to FILE, from which
 * `--from-snapshot FILE` (or `V86Box.layer({ fromSnapshot })`) starts forks.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { resolve } from "node:path"
import { V86Box } from "../V86Box.ts"
import { setExitCode } from "./exitCode.ts"
import { runStreamed } from "./hostOutput.ts"
import { formatBytes } from "./progressBar.ts"
import { sandboxOptions, toV86BoxOptions } from "./sandboxOptions.ts"

const createCommand = Command.make(
  "create",
  {
    ...sandboxOptions,
    file: Args.path({ name: "file" }).pipe(Args.withDescription("Where to write the snapshot (replaced atomically).")),
    setup: Args.text({ name: "setup" }).pipe(
      Args.repeated,
      Args.withDescription(
        "A command to run before saving, after `--` (joined with spaces, run with `bash -c`); it must exit 0. " +
          "Example: v86box snapshot create base.v86state -- 'mkdir /work && echo ready > /work/state'"
      )
    )
  },
  (options) =>
    Effect.gen(function*() {
      const box = yield* V86Box
      if (options.setup.length > 0) {
        const exitCode = yield* runStreamed(box, options.setup.join(" "))
        if (exitCode !== 0) {
          yield* Console.error(`v86box: the setup command exited with code ${exitCode}; no snapshot was written`)
          return yield* setExitCode(exitCode)
        }
      }
      const path = resolve(options.file)
      const snapshot = yield* box.snapshot(path)
      yield* Console.error(`snapshot written: ${path} (${formatBytes(snapshot.bytes.length)})`)
    }).pipe(Effect.provide(V86Box.layer(toV86BoxOptions(options))))
).pipe(
  Command.withDescription(
    "Boot a sandbox (or fork one with --from-snapshot), run an optional setup command, and save the whole sandbox " +
      "to a file that --from-snapshot starts new sandboxes from."
  )
)

export const snapshotCommand = Command.make("snapshot").pipe(
  Command.withDescription("Save a prepared sandbox to a file."),
  Command.withSubcommands([createCommand])
)
