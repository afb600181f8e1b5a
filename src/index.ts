/**
 * v86box: run bash commands in a sandboxed x86 Linux VM emulated by v86.
 *
 * @since 0.1.0
 */
export * as Assets from "./Assets.ts"
export * from "./Errors.ts"
export * as GuestFileSystem from "./GuestFileSystem.ts"
export type { GuestFileSystemOptions } from "./GuestFileSystem.ts"
export type { ExecOptions, HostMountOptions, StdinInput, User, V86BoxOptions } from "./Options.ts"
export type { ExecResult, ExitStatus, Process, ProcessError, Signal } from "./Process.ts"
export { Snapshot, SnapshotSource } from "./Snapshot.ts"
export { type PromiseBox, type PromiseExecOptions, type StartedFrom, type Status, V86Box } from "./V86Box.ts"
export { type SandboxError, V86BoxPool, type V86BoxPoolOptions } from "./V86BoxPool.ts"
