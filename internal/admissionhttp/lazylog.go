package admissionhttp

import "github.com/go-logr/logr"

// withLazyValues returns l with key-values that reach its sink only when a line is written.
// Every admission's logger carries the request's identity, but almost no admission logs
// anything at the default verbosity; zap's WithValues encodes the values and clones its core
// straight away, which was 2.5% of a warm admission's CPU under load.
func withLazyValues(l logr.Logger, keysAndValues ...any) logr.Logger {
	sink := l.GetSink()
	if sink == nil {
		return l
	}
	return l.WithSink(&lazySink{base: sink, values: keysAndValues})
}

// lazySink holds key-values for its base sink until a line is written.
type lazySink struct {
	base   logr.LogSink
	values []any
}

var (
	_ logr.LogSink          = (*lazySink)(nil)
	_ logr.CallDepthLogSink = (*lazySink)(nil)
)

// Init does nothing: the base sink was initialised with its own logger.
func (s *lazySink) Init(logr.RuntimeInfo) {}

func (s *lazySink) Enabled(level int) bool { return s.base.Enabled(level) }

func (s *lazySink) Info(level int, msg string, keysAndValues ...any) {
	s.resolved().Info(level, msg, keysAndValues...)
}

func (s *lazySink) Error(err error, msg string, keysAndValues ...any) {
	s.resolved().Error(err, msg, keysAndValues...)
}

func (s *lazySink) WithValues(keysAndValues ...any) logr.LogSink {
	values := make([]any, 0, len(s.values)+len(keysAndValues))
	return &lazySink{base: s.base, values: append(append(values, s.values...), keysAndValues...)}
}

func (s *lazySink) WithName(name string) logr.LogSink {
	return &lazySink{base: s.base.WithName(name), values: s.values}
}

func (s *lazySink) WithCallDepth(depth int) logr.LogSink {
	return &lazySink{base: callDepth(s.base, depth), values: s.values}
}

// resolved is the base sink with the values, one frame deeper: the line is attributed to the
// caller of Info or Error, not to this sink.
func (s *lazySink) resolved() logr.LogSink {
	return callDepth(s.base.WithValues(s.values...), 1)
}

func callDepth(sink logr.LogSink, depth int) logr.LogSink {
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		return cd.WithCallDepth(depth)
	}
	return sink
}
