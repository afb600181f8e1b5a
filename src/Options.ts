/**
 * Options of a sandbox and of a command, as Schemas: a bad option fails with
 * `InvalidOptions` listing every bad field, before anything boots or runs.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { AssetSources, type DownloadProgress } from "./Assets.ts"
import { statSync } from "node:fs"
import { InvalidOptions } from "./Errors.ts"
import { SnapshotSource } from "./Snapshot.ts"

/**
 * Anything `effect/Duration` accepts: `"1 second"`, `500` (milliseconds), a `Duration`…
 * Decodes to a `Duration`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const DurationInput: Schema.Schema<Duration.Duration, Duration.DurationInput> = Schema.declare(
  (input: unknown): input is Duration.DurationInput => Option.isSome(Duration.decodeUnknown(input)),
  { identifier: "DurationInput", description: 'a duration such as "1 second", "500 millis" or a number of milliseconds' }
).pipe(
  Schema.transform(Schema.DurationFromSelf, {
    strict: true,
    decode: (input) => Duration.decode(input),
    encode: (duration) => duration
  })
)

const ByteCount = Schema.Number.pipe(Schema.int(), Schema.positive())

const isHostDirectory = (path: string) => {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

/** An absolute guest path in its plain form: no ".", "..", empty or trailing components, and not "/" itself. */
const isPlainAbsolutePath = (path: string) =>
  path.startsWith("/") && path.length > 1 && path.slice(1).split("/").every((part) => part !== "" && part !== "." && part !== "..")

/**
 * A host directory mounted in the guest, as a Schema.
 *
 * @since 0.1.0
 * @category schemas
 */
export const HostMountSchema = Schema.Struct({
  host: Schema.String.pipe(Schema.filter((path) => isHostDirectory(path) || "must be an existing directory on the host")),
  guest: Schema.String.pipe(
    Schema.filter((path) => !path.includes("\0") || "must not contain a NUL byte"),
    Schema.filter((path) =>
      isPlainAbsolutePath(path) || 'must be an absolute guest path other than "/", without ".", ".." or empty parts'
    )
  ),
  readOnly: Schema.optional(Schema.Boolean)
})

/**
 * A host directory the guest sees at `guest`, over 9p.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostMountOptions {
  /** The directory on the host. It must exist. */
  readonly host: string
  /** Where the guest sees it: an absolute path, made if missing. */
  readonly guest: string
  /** Whether the guest may change it (default `true`: read-only). Enforced by the host, whatever the guest remounts. */
  readonly readOnly?: boolean | undefined
}

/** @internal */
export interface HostMount {
  readonly host: string
  readonly guest: string
  readonly readOnly: boolean
}

const HostMounts = Schema.Array(HostMountSchema).pipe(
  Schema.filter((mounts) => {
    const seen = new Set<string>()
    for (const mount of mounts) {
      if (seen.has(mount.guest)) return `two mounts at the guest path ${mount.guest}`
      seen.add(mount.guest)
    }
    return true
  })
)

/**
 * The sandbox options, as a Schema (without the `onProgress` callback, which is not data).
 *
 * @since 0.1.0
 * @category schemas
 */
export const V86BoxOptionsSchema = Schema.Struct({
  memoryMB: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(32, 2048))),
  bootTimeout: Schema.optional(DurationInput),
  commandTimeout: Schema.optional(DurationInput),
  maxOutputBytes: Schema.optional(ByteCount),
  assetsDir: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  assets: Schema.optional(AssetSources),
  firmware: Schema.optional(Schema.Literal("direct", "seabios")),
  warmStart: Schema.optional(Schema.Boolean),
  stateFile: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  standby: Schema.optional(Schema.Boolean),
  mounts: Schema.optional(HostMounts),
  fromSnapshot: Schema.optional(SnapshotSource)
})

/**
 * Options of `V86Box.layer`.
 *
 * @since 0.1.0
 * @category models
 */
export interface V86BoxOptions {
  /** Guest RAM in MiB (32–2048, and at least what the image needs). Default: the image's size (64 for the bundled image). */
  readonly memoryMB?: number | undefined
  /** How long boot may take, from asset loading to the agent's ready frame. Default 60 seconds. */
  readonly bootTimeout?: Duration.DurationInput | undefined
  /** Default timeout of every command. Default: none. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** Default output limit of `exec` (stdout + stderr bytes). Default 16 MiB. */
  readonly maxOutputBytes?: number | undefined
  /** Where downloaded assets are cached. Default `~/.v86box`. */
  readonly assetsDir?: string | undefined
  /** Replace bundled assets with local paths or downloads `{ url, sha256 }`. */
  readonly assets?: AssetSources | undefined
  /** Called as asset downloads progress. */
  readonly onProgress?: ((progress: DownloadProgress) => void) | undefined
  /**
   * How a cold boot starts the kernel. `"direct"` (default): v86 enters the bzImage's
   * 32-bit entry point itself, with the memory map, command line and chipset set up as a
   * boot loader and firmware would (no BIOS or real-mode code to run, and the guest gets
   * all of its RAM: ~59 MiB of 64 instead of ~43).
   * `"seabios"`: the PC way, SeaBIOS and the VGA BIOS from the image, then the kernel's
   * real-mode setup (for a kernel that needs a BIOS). Resuming a saved state runs neither.
   */
  readonly firmware?: "direct" | "seabios" | undefined
  /**
   * Resume a saved booted state instead of booting (default true). The first cold boot
   * of an image saves one in `assetsDir/states/`; a state that will not resume is
   * logged, replaced and never fatal.
   */
  readonly warmStart?: boolean | undefined
  /** Where the booted state is kept. Default: `assetsDir/states/<key>.v86state`. */
  readonly stateFile?: string | undefined
  /**
   * Keep the next sandbox ready (default true; needs `warmStart`). When this sandbox is
   * released, the warm-start state is resumed into its emulator in the background (v86's
   * compiled code for unchanged guest pages is kept) and run through a few warm-up
   * commands, so the next `V86Box.layer` of this process with the same image, RAM and
   * state file starts in tens of milliseconds and runs its first commands at full speed.
   * Costs an idle emulator (~100 MB) and well under a second of background CPU per
   * released sandbox; an unused standby is shut down after 2 minutes and never keeps the
   * process alive. `false` shuts the released emulator down instead (it is still kept,
   * paused, for a minute, to speed up the next resume).
   */
  readonly standby?: boolean | undefined
  /**
   * Host directories the guest sees (9p), mounted before the sandbox is ready. Default:
   * none. The guest cannot reach outside them (`..`, symbolic links and hard links stay
   * inside), and a read-only mount is enforced by the host.
   */
  readonly mounts?: ReadonlyArray<HostMountOptions> | undefined
  /**
   * Start from a snapshot (`box.snapshot()`, or the path it was written to) instead of
   * booting: a fork of the sandbox it was taken from, with its own clock, entropy and
   * hostname. Guest RAM is the snapshot's. A snapshot that cannot resume fails with
   * `SnapshotError` (no fallback). `warmStart` and `stateFile` play no part.
   */
  readonly fromSnapshot?: SnapshotSource | undefined
}

/**
 * Who runs a command: `"root"` (default), `"user"` (uid 1000), or a numeric uid.
 *
 * @since 0.1.0
 * @category models
 */
export type User = "root" | "user" | number

/**
 * What a command reads on stdin: text, bytes, a stream of bytes, or `"pipe"` to feed it
 * through `Process.stdin`. Default: nothing (the command reads EOF).
 *
 * @since 0.1.0
 * @category models
 */
export type StdinInput = string | Uint8Array | Stream.Stream<Uint8Array, unknown> | "pipe"

/**
 * Options of one command.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExecOptions {
  /** Kill the command (its whole process group) after this long. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Kill the command once stdout + stderr exceed this many bytes. */
  readonly maxOutputBytes?: number | undefined
  readonly stdin?: StdinInput | undefined
  /** Environment variables added to the clean default environment. */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Working directory. Default: the user's home. */
  readonly cwd?: string | undefined
  readonly user?: User | undefined
}

const EnvName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]*$/, { message: () => "environment variable names are letters, digits and _" })
)

/** Text that crosses to the guest as a C string (argv, environment, paths). */
const GuestText = Schema.String.pipe(
  Schema.filter((text) => !text.includes("\0") || "must not contain a NUL byte")
)

const ExecOptionsSchema = Schema.Struct({
  timeout: Schema.optional(DurationInput),
  maxOutputBytes: Schema.optional(ByteCount),
  env: Schema.optional(Schema.Record({ key: EnvName, value: GuestText })),
  cwd: Schema.optional(GuestText.pipe(Schema.minLength(1))),
  user: Schema.optional(
    Schema.Union(Schema.Literal("root", "user"), Schema.Number.pipe(Schema.int(), Schema.between(0, 65535)))
  )
})

/** How a cold boot starts the kernel (see `V86BoxOptions.firmware`). @internal */
export type Firmware = "direct" | "seabios"

/** @internal */
export interface DecodedBoxOptions {
  readonly memoryMB: number | undefined
  readonly bootTimeout: Duration.Duration
  readonly commandTimeout: Duration.Duration | undefined
  readonly maxOutputBytes: number
  readonly assetsDir: string | undefined
  readonly assets: AssetSources | undefined
  readonly onProgress: ((progress: DownloadProgress) => void) | undefined
  readonly firmware: Firmware
  readonly warmStart: boolean
  readonly stateFile: string | undefined
  readonly standby: boolean
  readonly mounts: ReadonlyArray<HostMount>
  readonly fromSnapshot: SnapshotSource | undefined
}

/** @internal */
export interface DecodedExecOptions {
  readonly timeout: Duration.Duration | undefined
  readonly maxOutputBytes: number | undefined
  readonly stdin: StdinInput | undefined
  readonly env: Readonly<Record<string, string>> | undefined
  readonly cwd: string | undefined
  readonly uid: number
}

export const defaultBootTimeout = Duration.seconds(60)
export const defaultMaxOutputBytes = 16 * 1024 * 1024

/**
 * An optional field is `T | undefined` to the Schema, so a bad value is reported twice:
 * once against `T` (at the field, or deeper inside it) and once as "Expected undefined".
 * The second says nothing a user can act on.
 */
const isUndefinedAlternative = (issue: ParseResult.ArrayFormatterIssue, all: ReadonlyArray<ParseResult.ArrayFormatterIssue>) =>
  issue.message.startsWith("Expected undefined, actual") &&
  all.some((other) => other !== issue && issue.path.every((part, index) => other.path[index] === part))

const decodeWith = <A, I>(schema: Schema.Schema<A, I>, input: unknown, prefix: string) =>
  Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(input).pipe(
    Effect.mapError((error) => {
      const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
      return new InvalidOptions({
        issues: issues.filter((issue) => !isUndefinedAlternative(issue, issues)).map((issue) =>
          `${[prefix, ...issue.path.map(String)].filter((part) => part.length > 0).join(".")}: ${issue.message}`
        )
      })
    })
  )

/** @internal */
export const decodeBoxOptions = (options: V86BoxOptions | undefined): Effect.Effect<DecodedBoxOptions, InvalidOptions> => {
  const { onProgress, ...data } = options ?? {}
  return Effect.gen(function*() {
    if (onProgress !== undefined && typeof onProgress !== "function") {
      return yield* Effect.fail(new InvalidOptions({ issues: ["onProgress: must be a function"] }))
    }
    const decoded = yield* decodeWith(V86BoxOptionsSchema, data, "")
    return {
      memoryMB: decoded.memoryMB,
      bootTimeout: decoded.bootTimeout ?? defaultBootTimeout,
      commandTimeout: decoded.commandTimeout,
      maxOutputBytes: decoded.maxOutputBytes ?? defaultMaxOutputBytes,
      assetsDir: decoded.assetsDir,
      assets: decoded.assets,
      onProgress,
      firmware: decoded.firmware ?? "direct",
      warmStart: decoded.warmStart ?? true,
      stateFile: decoded.stateFile,
      standby: decoded.standby ?? true,
      mounts: (decoded.mounts ?? []).map((mount) => ({ host: mount.host, guest: mount.guest, readOnly: mount.readOnly ?? true })),
      fromSnapshot: decoded.fromSnapshot
    }
  })
}

const userIds: Record<"root" | "user", number> = { root: 0, user: 1000 }

/** @internal */
export const decodeExecOptions = (
  command: unknown,
  options: ExecOptions | undefined
): Effect.Effect<DecodedExecOptions, InvalidOptions> =>
  // The common call, `exec(command)`: nothing to decode (Schema's decoder took ~80 µs of
  // the ~300 µs of host-side work per exec, measured with a fake agent).
  options === undefined && typeof command === "string" && !command.includes("\0")
    ? noExecOptions
    : decodeAllExecOptions(command, options)

const decodeAllExecOptions = (
  command: unknown,
  options: ExecOptions | undefined
): Effect.Effect<DecodedExecOptions, InvalidOptions> => {
  const { stdin, ...data } = options ?? {}
  return Effect.gen(function*() {
    const issues: Array<string> = []
    if (typeof command !== "string") issues.push("command: must be a string")
    else if (command.includes("\0")) issues.push("command: must not contain a NUL byte")
    if (stdin !== undefined && !isStdinInput(stdin)) issues.push('stdin: must be a string, a Uint8Array, a Stream or "pipe"')
    const decoded = yield* decodeWith(ExecOptionsSchema, data, "").pipe(
      Effect.catchAll((error) => Effect.fail(new InvalidOptions({ issues: [...issues, ...error.issues] })))
    )
    if (issues.length > 0) return yield* Effect.fail(new InvalidOptions({ issues }))
    const user = decoded.user ?? "root"
    return {
      timeout: decoded.timeout,
      maxOutputBytes: decoded.maxOutputBytes,
      stdin,
      env: decoded.env,
      cwd: decoded.cwd,
      uid: typeof user === "number" ? user : userIds[user]
    }
  })
}

/** What decoding no exec options gives: decoded once, so it cannot drift from the decoder. */
const noExecOptions: Effect.Effect<DecodedExecOptions> = Effect.succeed(
  Effect.runSync(decodeAllExecOptions("", undefined))
)

const isStdinInput = (input: unknown): input is StdinInput =>
  typeof input === "string" || input instanceof Uint8Array || (typeof input === "object" && input !== null && Stream.StreamTypeId in input)
