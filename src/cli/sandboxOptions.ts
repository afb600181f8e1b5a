/**
 * The options every CLI command that boots a sandbox takes: `--memory`, `--timeout`,
 * `--assets-dir`, `--from-snapshot`. They become the `V86BoxOptions` of the layer, so the layer's own
 * checks (e.g. memory below what the image needs) apply to them too.
 */
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { V86BoxOptions } from "../Options.ts"

/**
 * `"30"` is 30 seconds (what people type on a command line); anything else must be an
 * `effect/Duration` string such as `"500 millis"` or `"2 minutes"`.
 */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const trimmed = text.trim()
  const duration = /^\d+(\.\d+)?$/.test(trimmed)
    ? Option.some(Duration.seconds(Number(trimmed)))
    : Duration.decodeUnknown(trimmed)
  return Option.filter(duration, (d) => Duration.greaterThan(d, Duration.zero))
}

const duration = (name: string) =>
  Options.text(name).pipe(
    Options.mapEffect((text) =>
      Option.match(parseDuration(text), {
        onNone: () =>
          Effect.fail(ValidationError.invalidValue(HelpDoc.p(
            `--${name}: "${text}" is not a duration: give seconds ("30") or a duration ("500 millis", "2 minutes")`
          ))),
        onSome: Effect.succeed
      })
    )
  )

export const memory = Options.integer("memory").pipe(
  Options.withPseudoName("MiB"),
  Options.withDescription("Guest RAM in MiB (default: what the image needs, 64 for the bundled one)."),
  Options.optional
)

export const timeout = duration("timeout").pipe(
  Options.withPseudoName("duration"),
  Options.withDescription(
    'Kill the command after this long: seconds ("30") or a duration ("500 millis"). Exit code 124. Default: none.'
  ),
  Options.optional
)

export const assetsDir = Options.directory("assets-dir").pipe(
  Options.withDescription("Cache of downloaded assets and saved booted states (default: ~/.v86box)."),
  Options.optional
)

export const fromSnapshot = Options.file("from-snapshot", { exists: "yes" }).pipe(
  Options.withDescription("Start from a snapshot file (written by `v86box snapshot create`) instead of booting."),
  Options.optional
)

/** The options together, as one record of the command's config. */
export const sandboxOptions = { memory, timeout, assetsDir, fromSnapshot }

/** What the sandbox options parse to. */
export interface SandboxOptions {
  readonly memory: Option.Option<number>
  readonly timeout: Option.Option<Duration.Duration>
  readonly assetsDir: Option.Option<string>
  readonly fromSnapshot: Option.Option<string>
}

export const toV86BoxOptions = (options: SandboxOptions): V86BoxOptions => ({
  memoryMB: Option.getOrUndefined(options.memory),
  commandTimeout: Option.getOrUndefined(options.timeout),
  assetsDir: Option.getOrUndefined(options.assetsDir),
  fromSnapshot: Option.getOrUndefined(options.fromSnapshot)
})
