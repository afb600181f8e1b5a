/**
 * Host directory mounts against a live VM: what the guest can read and write, what the
 * host refuses whatever the guest does (read-only after a remount, `..`, symbolic links,
 * hard links), nothing mounted by default, a fork from a snapshot mounting afresh. Bad
 * mount options are refused before any boot: test/options.test.ts.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { randomBytes } from "node:crypto"
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { V86Box } from "../src/index.ts"

/** The host side: a writable and a read-only directory, and a secret beside them that must stay out of reach. */
const base = join(tmpdir(), `v86box-mounts-${process.pid}-${randomBytes(4).toString("hex")}`)
const writable = join(base, "writable")
const readOnly = join(base, "read-only")
const outside = join(base, "outside")
const secretName = "host-secret-3f9c1"

/** Made when a suite that needs it starts, removed when it ends (filtered runs leave nothing behind). */
const hostDirectories = Layer.scopedDiscard(
  Effect.acquireRelease(
    Effect.sync(() => {
      // A run killed midway may have left its directories: start from nothing.
      rmSync(base, { recursive: true, force: true })
      for (const directory of [writable, readOnly, outside]) mkdirSync(directory, { recursive: true })
      writeFileSync(join(outside, secretName), "the host's secret\n")
      writeFileSync(join(writable, "from-host.txt"), "written on the host\n")
      writeFileSync(join(readOnly, "keep.txt"), "keep me\n")
      symlinkSync(outside, join(writable, "absolute-link"))
      symlinkSync("../outside", join(writable, "relative-link"))
    }),
    () => Effect.sync(() => rmSync(base, { recursive: true, force: true }))
  )
)

const mountOptions = {
  mounts: [
    { host: writable, guest: "/mnt/work", readOnly: false },
    { host: readOnly, guest: "/mnt/reference" }
  ]
}

const run = (command: string) => Effect.flatMap(V86Box, (box) => box.exec(command))

// The directories must exist before the options are checked: provide builds them first.
layer(Layer.provideMerge(V86Box.layer(mountOptions), hostDirectories), {
  excludeTestServices: true,
  timeout: "120 seconds"
})("host directory mounts on a live VM", (it) => {
  it.effect("the guest reads a host file and writes one back", () =>
    Effect.gen(function*() {
      expect((yield* run("cat /mnt/work/from-host.txt")).stdout).toBe("written on the host\n")
      expect((yield* run("echo 'written in the guest' > /mnt/work/from-guest.txt")).exitCode).toBe(0)
      expect(readFileSync(join(writable, "from-guest.txt"), "utf8")).toBe("written in the guest\n")
      expect((yield* run("mkdir /mnt/work/dir && mv /mnt/work/from-guest.txt /mnt/work/dir/ && ls /mnt/work/dir")).stdout).toBe("from-guest.txt\n")
      expect(existsSync(join(writable, "dir", "from-guest.txt"))).toBe(true)
    }))

  it.effect("a read-only mount refuses writes, even after the guest remounts it read-write", () =>
    Effect.gen(function*() {
      expect((yield* run("cat /mnt/reference/keep.txt")).stdout).toBe("keep me\n")
      const before = yield* run("echo x > /mnt/reference/new.txt")
      expect(before.exitCode).not.toBe(0)
      expect(before.stderr).toContain("Read-only file system")
      const remounted = yield* run(
        "mount -o remount,rw /mnt/reference && echo remounted; echo x > /mnt/reference/new.txt; echo y >> /mnt/reference/keep.txt; rm /mnt/reference/keep.txt; mkdir /mnt/reference/d; true"
      )
      expect(remounted.stdout).toBe("remounted\n")
      expect(remounted.stderr.match(/Read-only file system/g)?.length).toBe(4)
      expect(readFileSync(join(readOnly, "keep.txt"), "utf8")).toBe("keep me\n")
      expect(existsSync(join(readOnly, "new.txt"))).toBe(false)
      expect(existsSync(join(readOnly, "d"))).toBe(false)
    }))

  it.effect('".." leads to the guest\'s own directories, never the host\'s', () =>
    Effect.gen(function*() {
      const escape = yield* run(`cat /mnt/work/../outside/${secretName}; cat /mnt/work/../../outside/${secretName}; ls /mnt/work/..`)
      expect(escape.stdout).toBe("reference\nwork\n")
      expect(escape.stderr).toContain("No such file or directory")
      expect(escape.stdout + escape.stderr).not.toContain("the host's secret")
    }))

  it.effect("a host symbolic link pointing outside (absolute or relative) resolves inside the guest, not on the host", () =>
    Effect.gen(function*() {
      const followed = yield* run(`cat /mnt/work/absolute-link/${secretName}; cat /mnt/work/relative-link/${secretName}`)
      expect(followed.stdout).toBe("")
      expect(followed.stderr.match(/No such file or directory/g)?.length).toBe(2)
    }))

  it.effect("the guest cannot make links that point outside, or hard links to files outside", () =>
    Effect.gen(function*() {
      const links = yield* run(
        "ln -s /etc /mnt/work/etc-link; ln -s ../../../etc/passwd /mnt/work/up-link; ln /etc/passwd /mnt/work/passwd; " +
          "ln -s from-host.txt /mnt/work/inside-link && cat /mnt/work/inside-link"
      )
      expect(links.stderr).toContain("failed to create symbolic link '/mnt/work/etc-link': Operation not permitted")
      expect(links.stderr).toContain("failed to create symbolic link '/mnt/work/up-link': Operation not permitted")
      expect(links.stderr).toContain("failed to create hard link '/mnt/work/passwd' => '/etc/passwd': Invalid cross-device link")
      expect(links.stdout).toBe("written on the host\n")
      for (const name of ["etc-link", "up-link", "passwd"]) expect(existsSync(join(writable, name))).toBe(false)
      expect(lstatSync(join(writable, "inside-link")).isSymbolicLink()).toBe(true)
    }))

  it.effect("device nodes cannot be made in a mount", () =>
    Effect.gen(function*() {
      const made = yield* run("mknod /mnt/work/disk b 8 0")
      expect(made.exitCode).not.toBe(0)
      expect(existsSync(join(writable, "disk"))).toBe(false)
    }))
})

describe("snapshots", () => {
  // Live clock: a sandbox's boot and shutdown wait on real time.
  it.live("a fork of a sandbox with mounts mounts afresh (its parent's mount died with its server); large writes still work", () =>
    Effect.gen(function*() {
      yield* Layer.build(hostDirectories)
      const snapshot = yield* Effect.scoped(Effect.gen(function*() {
        const parent = yield* Layer.build(V86Box.layer(mountOptions)).pipe(Effect.map((context) => Context.get(context, V86Box)))
        expect((yield* parent.exec("cat /mnt/work/from-host.txt")).stdout).toBe("written on the host\n")
        yield* parent.fs.writeFile("/tmp/staged", new Uint8Array(100_000).fill(7))
        return yield* parent.snapshot()
      }))
      const fork = yield* Layer.build(V86Box.layer({ fromSnapshot: snapshot, mounts: [{ host: readOnly, guest: "/mnt/work" }] })).pipe(
        Effect.map((context) => Context.get(context, V86Box))
      )
      // The fork was told to mount the read-only directory at /mnt/work: it sees that one.
      expect((yield* fork.exec("cat /mnt/work/keep.txt; ls /mnt/reference")).stdout).toBe("keep me\n")
      expect((yield* fork.exec("grep -c ' 9p ' /proc/mounts")).stdout).toBe("2\n")
      yield* fork.fs.writeFile("/tmp/staged-again", new Uint8Array(100_000).fill(9))
      expect((yield* fork.exec("cmp /tmp/staged-again <(head -c 100000 /dev/zero | tr '\\0' '\\11') && echo same")).stdout).toBe("same\n")
    }).pipe(Effect.scoped), 300_000)
})

layer(V86Box.layer(), { excludeTestServices: true, timeout: "120 seconds" })("no mounts", (it) => {
  it.effect("nothing from the host is mounted by default", () =>
    Effect.gen(function*() {
      const mounts = yield* run("grep -c ' 9p ' /proc/mounts")
      expect(mounts.stdout).toBe("0\n")
    }))
})
