// Package policy holds pullgate's declarative Policy: its versioned types, strict parsing with
// line numbers, defaults, validation that reports every problem with its field path, and Compile,
// which builds the immutable matcher the admission path consults. Load is the only I/O.
package policy
