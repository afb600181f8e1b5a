/**
 * A command line that parsed but asks for something impossible (e.g. `--url` without
 * `--sha256`): printed as one line, exit code 2, like `@effect/cli`'s own usage errors.
 */
import * as Schema from "effect/Schema"

export class UsageError extends Schema.TaggedError<UsageError>()("UsageError", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}
