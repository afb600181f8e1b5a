/**
 * The typed errors of v86box. Every failure a user can meet is one of these,
 * each a `Schema.TaggedError` with a readable `message`.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The guest did not announce itself (agent ready frame) within `bootTimeout`.
 * Carries the tail of the kernel log so the reason is visible.
 *
 * @since 0.1.0
 * @category errors
 */
export class BootTimeout extends Schema.TaggedError<BootTimeout>()("BootTimeout", {
  timeoutMillis: Schema.Number,
  kernelLogTail: Schema.String
}) {
  override get message(): string {
    return `the guest did not become ready within ${this.timeoutMillis} ms\n--- kernel log tail ---\n${this.kernelLogTail}`
  }
}

/**
 * A command ran longer than its timeout and was killed (its whole process group).
 * Carries the command and the output it produced before it was stopped.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandTimeout extends Schema.TaggedError<CommandTimeout>()("CommandTimeout", {
  command: Schema.String,
  timeoutMillis: Schema.Number,
  stdout: Schema.String,
  stderr: Schema.String
}) {
  override get message(): string {
    return `command timed out after ${this.timeoutMillis} ms and was killed: ${truncate(this.command, 200)}`
  }
}

/**
 * A command wrote more than `maxOutputBytes` (stdout and stderr together).
 * The command was killed; the output up to the limit is kept.
 *
 * @since 0.1.0
 * @category errors
 */
export class OutputLimitExceeded extends Schema.TaggedError<OutputLimitExceeded>()("OutputLimitExceeded", {
  command: Schema.String,
  maxOutputBytes: Schema.Number,
  stdout: Schema.String,
  stderr: Schema.String
}) {
  override get message(): string {
    return `command output exceeded ${this.maxOutputBytes} bytes and was killed: ${truncate(this.command, 200)}`
  }
}

/**
 * An asset (kernel, initrd, BIOS, wasm…) could not be found, read, downloaded or verified.
 *
 * @since 0.1.0
 * @category errors
 */
export class AssetError extends Schema.TaggedError<AssetError>()("AssetError", {
  asset: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `asset "${this.asset}": ${this.reason}`
  }
}

/**
 * The emulator or the guest failed: the worker crashed, the guest kernel panicked or
 * powered off, the agent died or spoke garbage. Carries the tail of the console.
 *
 * @since 0.1.0
 * @category errors
 */
export class MachineError extends Schema.TaggedError<MachineError>()("MachineError", {
  reason: Schema.String,
  consoleTail: Schema.String
}) {
  override get message(): string {
    return this.consoleTail.length > 0
      ? `${this.reason}\n--- console tail ---\n${this.consoleTail}`
      : this.reason
  }
}

/**
 * A snapshot could not be taken, read or resumed: the file is missing or is not a
 * snapshot, it was made by another image, v86 or protocol version, or the machine would
 * not resume from it. Unlike warm start, which falls back to a cold boot, a snapshot the
 * caller asked for either works or fails with this.
 *
 * @since 0.1.0
 * @category errors
 */
export class SnapshotError extends Schema.TaggedError<SnapshotError>()("SnapshotError", {
  reason: Schema.String,
  path: Schema.optional(Schema.String)
}) {
  override get message(): string {
    return this.path === undefined ? `snapshot: ${this.reason}` : `snapshot ${this.path}: ${this.reason}`
  }
}

/**
 * Options given to a layer or a command did not decode. Lists every bad field.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  issues: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `invalid options:\n${this.issues.map((issue) => `  - ${issue}`).join("\n")}`
  }
}

/**
 * Any error of v86box.
 *
 * @since 0.1.0
 * @category errors
 */
export type V86BoxError =
  | BootTimeout
  | CommandTimeout
  | OutputLimitExceeded
  | AssetError
  | MachineError
  | InvalidOptions
  | SnapshotError

const truncate = (text: string, max: number): string =>
  text.length <= max ? text : `${text.slice(0, max)}…`
