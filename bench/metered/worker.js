// A baseline of `cargo xtask bench proxy` for answers that are not streamed: the JS passthrough
// plus the least a metering proxy does with such an answer. It reads the answer whole (the
// usage is at its end), takes the usage out of it, writes one log line, and answers with the
// bytes it read. No JWT, no limits, no routing: what is left of our Worker's cost above this is
// ours; the passthrough, which hands the answer's body through unread, cannot meter anything.
import { metering } from "./meter.js";

export default metering({ log: true });
