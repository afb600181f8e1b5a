/**
 * exec and start against a live VM: one boot for the whole file.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { V86Box } from "../src/index.ts"
import { execSuite } from "./suites/exec.ts"

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("exec on a live VM", (it) => {
  execSuite(it, { live: true, elapse: () => Effect.void })

  /*
   * Commands run in processes the agent's fork server (a bash started at boot, patched:
   * image/bash/) clones; each must look like a `bash -c` started at that moment.
   */
  describe("commands forked from the fork server look like a fresh bash -c", () => {
    // A forked command's /proc/PID/environ is the one the server was exec'd with.
    // (Read through $p: in the pipeline $BASHPID would be the pipeline's process.)
    const forked = "p=$BASHPID; tr '\\0' '\\n' </proc/$p/environ | grep -c '^V86BOX_FORK_SERVER=' || true"

    it.effect("they are forked, not exec'd, and $$, the process group and $PPID are the command's own", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        const result = yield* box.exec(
          `${forked}; echo $$ $BASHPID $(ps -o pgid= -p $$) $(ps -o sid= -p $$); [ $PPID = $(ps -o ppid= -p $$) ] && echo parent`
        )
        const [count, ...rest] = result.stdout.trim().split("\n")
        expect(count).toBe("1")
        const [dollar, bashpid, group, session] = rest[0]!.trim().split(/\s+/)
        expect(dollar).toBe(bashpid)
        expect(group).toBe(dollar)
        expect(session).toBe(dollar)
        expect(rest[1]).toBe("parent")
      }))

    it.effect("$0, $-, $_, no stray variables, default signals, SECONDS from 0, fresh $RANDOM", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        const show = "echo \"$0 $- $_ [${FUNCNAME[*]}] $SECONDS $#\"; compgen -v | grep -ci v86box; " +
          "grep SigIgn /proc/self/status; echo $RANDOM"
        const first = yield* box.exec(show)
        const second = yield* box.exec(show)
        const lines = first.stdout.split("\n")
        // SECONDS counts from the command's start (0, or 1 across a second's edge), not
        // from the server's, which started with the sandbox, seconds ago.
        expect(lines[0]).toMatch(/^bash hBc bash \[\] [01] 0$/)
        expect(lines.slice(1, 3)).toEqual(["0", "SigIgn:\t0000000000000000"])
        expect(lines[3]).not.toBe(second.stdout.split("\n")[3])
      }))

    it.effect("cwd, env, PWD and HOSTNAME are the command's", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        const result = yield* box.exec(`${forked}; pwd; echo "$PWD $OLDPWD."; echo "$GREETING"; printenv GREETING; [ "$HOSTNAME" = "$(hostname)" ] && echo host`, {
          cwd: "/tmp",
          env: { GREETING: "hi there" }
        })
        expect(result.stdout).toBe("1\n/tmp\n/tmp .\nhi there\nhi there\nhost\n")
      }))

    it.effect("a function, variable or cd in one command is gone in the next", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        yield* box.exec("f() { echo leaked; }; X=leaked; cd /tmp; export Y=leaked")
        const result = yield* box.exec("type f 2>&1 | head -1; echo \"[$X][$Y]\"; pwd")
        expect(result.stdout).toBe("bash: line 1: type: f: not found\n[][]\n/root\n")
      }))

    /*
     * How a forked command ends must be how a `bash -c` ends: the EXIT trap runs last and
     * sets the status, a subshell's exit is not the command's, an exec'd program's status
     * is the command's, and nothing it started outlives it (its group is killed, its
     * process reaped, its cgroup emptied for the next command).
     */
    it.effect("a command's exit: the EXIT trap's output and status, subshells, exec, nothing left behind", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        // The EXIT trap runs last and its exit sets the status; a subshell's exit is not the command's.
        const trapped = yield* box.exec("trap 'echo trapped; exit 7' EXIT; echo hi; (exit 3); echo after >&2; printf end")
        expect([trapped.exitCode, trapped.stdout, trapped.stderr]).toEqual([7, "hi\nendtrapped\n", "after\n"])
        // A program the command execs ends it with its own status.
        const execd = yield* box.exec("echo x; exec sh -c 'echo y >&2; exit 4'")
        expect([execd.exitCode, execd.stdout, execd.stderr]).toEqual([4, "x\n", "y\n"])
        // What a command left running in its group goes with it.
        const background = yield* box.exec("sleep 30 & exit 5")
        expect(background.exitCode).toBe(5)
        for (let i = 0; i < 30; i++) expect((yield* box.exec(`echo ${i}; exit ${i % 3}`)).exitCode).toBe(i % 3)
        // Later: no process of those commands, and their cgroups hold no one else.
        const left = yield* box.exec(
          `sleep 0.2; ps -eo pid=,stat=,args= | grep -E 'sleep 30|^ *[0-9]+ Z' | grep -v grep; mine=$(cut -d: -f3 /proc/$$/cgroup); ` +
            `for g in /sys/fs/cgroup/commands/command-*; do [ "/commands/\${g##*/}" = "$mine" ] || cat $g/cgroup.procs; done; echo done`
        )
        expect(left.stdout).toBe("done\n")
      }))

    it.effect("a killed fork server is replaced, and commands keep working", () =>
      Effect.gen(function*() {
        const box = yield* V86Box
        const killed = yield* box.exec("s=$(pgrep -xf v86box-fork-server) && kill -9 $s && echo $s")
        expect(killed.stdout.trim()).toMatch(/^\d+$/)
        const after = [yield* box.exec("echo one"), yield* box.exec("echo two")]
        expect(after.map((result) => result.stdout)).toEqual(["one\n", "two\n"])
        // The next server is up within a few commands.
        let count = "0"
        for (let attempt = 0; attempt < 20 && count !== "1"; attempt++) {
          count = (yield* box.exec(forked)).stdout.trim()
          if (count !== "1") yield* Effect.sleep("100 millis")
        }
        expect(count).toBe("1")
      }))
  })
})

describe("layer options", () => {
  it.live("bootTimeout of 1 millis fails with BootTimeout", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(V86Box.layer({ bootTimeout: "1 millis" }))))
      expect(error._tag).toBe("BootTimeout")
      expect(error.message).toContain("1 ms")
    }))

  it.live("bad options fail with InvalidOptions naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(
        Layer.build(V86Box.layer({ memoryMB: 3, bootTimeout: "soon" as never, maxOutputBytes: -1 }))
      ))
      expect(error._tag).toBe("InvalidOptions")
      expect(error.message).toContain("memoryMB")
      expect(error.message).toContain("bootTimeout")
      expect(error.message).toContain("maxOutputBytes")
    }))
})
