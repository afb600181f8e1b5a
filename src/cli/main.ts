#!/usr/bin/env node
/**
 * The `v86box` command line: `exec`, `run`, `assets fetch|verify`, `snapshot create`.
 * Every failure ends as one readable message on stderr and an exit code (see
 * `exitCode.ts`), never as a stack trace; a guest command's exit code is passed through.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { bundledAssetsDir } from "../Assets.ts"
import { assetsCommand } from "./assetsCommand.ts"
import { execCommand } from "./execCommand.ts"
import { exitCodes, setExitCode } from "./exitCode.ts"
import { runCommand } from "./runCommand.ts"
import { snapshotCommand } from "./snapshotCommand.ts"

const packageVersion: string = JSON.parse(readFileSync(join(dirname(bundledAssetsDir), "package.json"), "utf8")).version

const v86box = Command.make("v86box").pipe(
  Command.withDescription("Run bash commands in a sandboxed x86 Linux VM emulated by v86."),
  Command.withSubcommands([execCommand, runCommand, assetsCommand, snapshotCommand])
)

const cli = Command.run(v86box, { name: "v86box", version: packageVersion })

const exitCodeOf = (error: { readonly _tag: string }): number => {
  switch (error._tag) {
    case "UsageError":
    case "InvalidOptions":
      return exitCodes.usage
    case "CommandTimeout":
      return exitCodes.timeout
    case "HostOutputClosed":
      return exitCodes.brokenPipe
    default:
      return exitCodes.failure
  }
}

const program = Effect.suspend(() => cli(process.argv)).pipe(
  Effect.catchAll((error) => {
    // @effect/cli has already printed its usage error.
    if (ValidationError.isValidationError(error)) return setExitCode(exitCodes.usage)
    const report = error._tag === "HostOutputClosed" ? Effect.void : Console.error(`v86box: ${error.message}`)
    return Effect.zipRight(report, setExitCode(exitCodeOf(error)))
  }),
  // The sandbox's warnings (e.g. a saved state that would not resume, so it booted cold)
  // are shown with `--log-level warning`, on stderr: by default stderr is the guest's alone.
  Effect.provide(Layer.mergeAll(
    NodeContext.layer,
    CliConfig.layer({ showBuiltIns: false }),
    Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.prettyLogger())),
    Logger.minimumLogLevel(LogLevel.Error)
  ))
)

NodeRuntime.runMain(program, {
  disablePrettyLogger: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit)) onExit(typeof process.exitCode === "number" ? process.exitCode : 0)
    else onExit(Cause.isInterruptedOnly(exit.cause) ? exitCodes.interrupted : exitCodes.failure)
  }
})
