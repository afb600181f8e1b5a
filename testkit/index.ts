/**
 * v86box/testkit: test code that uses `V86Box` without booting a VM, by replaying
 * recorded console transcripts.
 *
 * @since 0.1.0
 */
export * from "./Errors.ts"
export * as Testkit from "./Testkit.ts"
export * as Transcript from "./Transcript.ts"
export { script, type ScriptedCommand } from "./Script.ts"
