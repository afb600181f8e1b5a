/**
 * Host directories the guest sees over 9p (its virtio-9p device, mount tag `host9p`),
 * served by src/internal/fileServer.ts:
 *
 * - the user's `mounts`, mounted by the guest when the sandbox starts;
 * - a private staging directory, read-only to the guest, through which large files go
 *   into the guest: the host writes the bytes there, a guest command copies them into
 *   place, and the host deletes them. 9p moves them several times faster than the console.
 *
 * The guest mounts the root of all shares once (Linux mounts a virtio-9p device once) at
 * /run/v86box/host and binds each user directory where it belongs. Nothing is mounted in
 * a saved state: warm start saves before the sandbox starts, and a sandbox resumed from a
 * snapshot mounts afresh (a mount's fids do not outlive the server that answered them, so
 * a stale mount is detached first).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type CommandTimeout, type InvalidOptions, MachineError, type OutputLimitExceeded } from "../Errors.ts"
import type { ExecOptions, HostMount } from "../Options.ts"
import type { ExecResult } from "../Process.ts"
import { quote } from "./guestFileSystem.ts"
import { FileServer } from "./fileServer.ts"

/** The export name of the staging directory. */
const STAGING_EXPORT = "staging"
/** Where the guest mounts the root of all shares (one mount per virtio-9p device). */
const SHARES_ROOT = "/run/v86box/host"
/** The largest 9P message the guest's virtio transport takes (PAGE_SIZE × 125): fewer, larger reads. */
const MESSAGE_BYTES = 512_000

const mountExport = (index: number) => `mount${index}`

export interface HostShares {
  /** Answers one 9P request of the guest. */
  readonly handle: (request: Uint8Array) => Promise<Uint8Array>
  /** The staging directory on the host. */
  readonly stagingDirectory: string
}

/**
 * A file server for the user's mounts and a new staging directory; closing the scope
 * closes what the guest left open and deletes the staging directory.
 */
export const make = (mounts: ReadonlyArray<HostMount>): Effect.Effect<HostShares, MachineError, Scope.Scope> =>
  Effect.gen(function*() {
    const stagingDirectory = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const directory = await mkdtemp(join(tmpdir(), "v86box-staging-"))
          // The guest checks permissions against the host's mode: any guest user may read.
          await chmod(directory, 0o755)
          return directory
        },
        catch: (error) => new MachineError({ reason: `cannot make the file staging directory: ${String(error)}`, consoleTail: "" })
      }),
      (directory) => Effect.promise(() => rm(directory, { recursive: true, force: true }))
    )
    const server = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          FileServer.make([
            { name: STAGING_EXPORT, hostDirectory: stagingDirectory, readOnly: true },
            ...mounts.map((mount, index) => ({ name: mountExport(index), hostDirectory: mount.host, readOnly: mount.readOnly }))
          ]),
        catch: (error) => new MachineError({ reason: `cannot share the host directories: ${String(error)}`, consoleTail: "" })
      }),
      (server) => Effect.promise(() => server.close())
    )
    return { handle: (request) => server.handle(request), stagingDirectory }
  })

/**
 * Mounts the root of all shares. Any 9p mount already there came with a snapshot and
 * its server is gone (and while one lives, the device cannot be mounted again): each is
 * detached first. /proc/self/mounts escapes spaces and such as octal, which %b undoes.
 */
const mountRootScript = [
  `awk '$3 == "9p" { print $2 }' /proc/self/mounts | sort -r | while read -r stale; do umount -l "$(printf '%b' "$stale")"; done`,
  `mkdir -p ${SHARES_ROOT} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=${MESSAGE_BYTES} host9p ${SHARES_ROOT}`
].join("\n")

/**
 * Binds each user directory where the user wants it, parents first. A read-only one is
 * bound read-only too, though the host refuses its changes anyway (guest root can remount).
 */
const bindScript = (mounts: ReadonlyArray<HostMount>): string =>
  mounts
    .map((mount, index) => ({ mount, index }))
    .sort((a, b) => a.mount.guest.length - b.mount.guest.length)
    .map(({ index, mount }) => {
      const target = quote(mount.guest)
      const bind = `mkdir -p -- ${target} && mount --bind ${SHARES_ROOT}/${mountExport(index)} ${target}`
      return `${bind}${mount.readOnly ? ` && mount -o remount,bind,ro ${target}` : ""} || exit`
    })
    .join("\n")

/** What the guest side needs of the sandbox: commands run as root. */
type Exec = (command: string, options?: ExecOptions) => Effect.Effect<ExecResult, CommandTimeout | OutputLimitExceeded | MachineError | InvalidOptions>

/**
 * The guest side of the shares, for one sandbox: the root is mounted once (at start when
 * there are user directories, else at the first staged file), after any resume, so no
 * saved state ever holds a live mount.
 */
export const guestSide = (exec: Exec) => {
  // Bounded by the boot timeout or the file operation, not by the user's commandTimeout.
  const asRoot = (script: string) => exec(script, { user: "root", timeout: Duration.infinity })
  let rootMounted: ExecResult | undefined
  const lock = Effect.unsafeMakeSemaphore(1)
  const mountRoot = lock.withPermits(1)(
    Effect.suspend(() =>
      rootMounted !== undefined ? Effect.succeed(rootMounted) : Effect.tap(asRoot(mountRootScript), (result) => {
        rootMounted = result
      })
    )
  )

  /** Mounts the user's directories; fails with what the guest said when it cannot. */
  const mountDirectories = (mounts: ReadonlyArray<HostMount>) =>
    Effect.gen(function*() {
      if (mounts.length === 0) return
      const root = yield* mountRoot
      const bound = root.exitCode === 0 ? yield* asRoot(bindScript(mounts)) : root
      if (bound.exitCode !== 0) {
        return yield* Effect.fail(
          new MachineError({ reason: `the guest could not mount the host directories: ${bound.stderr.trim()}`, consoleTail: "" })
        )
      }
    }).pipe(
      Effect.mapError((error) =>
        error._tag === "MachineError" ? error : new MachineError({ reason: `mounting the host directories failed: ${error.message}`, consoleTail: "" })
      )
    )

  /**
   * Puts bytes in the staging directory and answers the path the guest reads them at, or
   * `undefined` when the guest cannot mount the shares (a custom image without 9p): the
   * caller then uses the console. The file is deleted when the scope closes.
   */
  const stage = (shares: HostShares) => (bytes: Uint8Array): Effect.Effect<string | undefined, unknown, Scope.Scope> =>
    Effect.gen(function*() {
      if ((yield* mountRoot).exitCode !== 0) return undefined
      const name = randomBytes(12).toString("hex")
      const hostPath = join(shares.stagingDirectory, name)
      yield* Effect.acquireRelease(
        Effect.tryPromise(() => writeFile(hostPath, bytes, { mode: 0o644 })),
        () => Effect.promise(() => rm(hostPath, { force: true }))
      )
      return `${SHARES_ROOT}/${STAGING_EXPORT}/${name}`
    })

  return { mountDirectories, stage }
}
