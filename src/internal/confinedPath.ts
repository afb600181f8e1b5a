/**
 * Path confinement for a host directory the guest may use: every host path handed out is
 * the root plus names the guest sent, each a plain name (never "", ".", "..", or one
 * containing "/" or NUL), and every directory on the way is checked to be a real
 * directory, not a symbolic link. So no path can leave the root lexically, and none goes
 * through a link.
 *
 * The last name of a path is left to the caller, which must not follow it if it is a
 * link: use `lstat`, `O_NOFOLLOW`, or `inspect` and refuse links. The guest's kernel
 * resolves symbolic links itself (it reads the target and walks it in the guest's own
 * namespace), so the host never needs to follow one. The checks and the operation that
 * follows are not atomic: the file server runs the guest's requests one at a time, so the
 * guest cannot change a path between the two; a host process changing the directory at
 * the same time is trusted by definition.
 */
import type { BigIntStats } from "node:fs"
import { lstat, realpath } from "node:fs/promises"
import { join } from "node:path"
import { NinePError } from "./ninePWire.ts"

/** A name inside a directory: a guest-sent path component that cannot move the path elsewhere. */
export const checkName = (name: string): string => {
  if (name.length === 0 || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw new NinePError("EINVAL", `not a plain file name: ${JSON.stringify(name)}`)
  }
  return name
}

export class ConfinedRoot {
  private constructor(readonly root: string) {}

  /** The root, with its own symbolic links resolved (the user chose it); it must be a directory. */
  static async open(hostDirectory: string): Promise<ConfinedRoot> {
    const root = await realpath(hostDirectory)
    if (!(await lstat(root)).isDirectory()) throw new NinePError("ENOTDIR", `${hostDirectory} is not a directory`)
    return new ConfinedRoot(root)
  }

  /**
   * The host path of `names` below the root, after checking that each directory on the way
   * (all names but the last) is a directory and not a link. The last name is not checked.
   */
  async resolve(names: ReadonlyArray<string>): Promise<string> {
    let path = this.root
    for (let index = 0; index < names.length; index++) {
      path = join(path, checkName(names[index]!))
      if (index === names.length - 1) break
      const stats = await lstat(path)
      if (stats.isSymbolicLink() || !stats.isDirectory()) throw new NinePError("ENOTDIR", `${path} is not a directory`)
    }
    return path
  }

  /** The host path of `names` and what is there, without following a link at the end. */
  async inspect(names: ReadonlyArray<string>): Promise<{ readonly path: string; readonly stats: BigIntStats }> {
    const path = await this.resolve(names)
    return { path, stats: await lstat(path, { bigint: true }) }
  }

  /** Whether `target`, a link's text stored in directory `names`, stays inside the root when followed there. */
  static linkStaysInside(names: ReadonlyArray<string>, target: string): boolean {
    if (target.length === 0 || target.startsWith("/") || target.includes("\0")) return false
    let depth = names.length
    for (const part of target.split("/")) {
      if (part === "" || part === ".") continue
      depth += part === ".." ? -1 : 1
      if (depth < 0) return false
    }
    return true
  }
}
