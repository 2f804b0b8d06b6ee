package coffer

import "time"

// LogLevel is the severity of a line an agent logged. The values are those
// of log/slog, so an agent's records keep their order and finer grades
// between the named ones fall in the named class below them.
type LogLevel int

// The log levels.
const (
	LogDebug LogLevel = -4
	LogInfo  LogLevel = 0
	LogWarn  LogLevel = 4
	LogError LogLevel = 8
)

// LogLevels lists the named levels, least severe first.
var LogLevels = []LogLevel{LogDebug, LogInfo, LogWarn, LogError}

// String names the class of l: "debug", "info", "warn" or "error".
func (l LogLevel) String() string {
	switch {
	case l >= LogError:
		return "error"
	case l >= LogWarn:
		return "warn"
	case l >= LogInfo:
		return "info"
	}
	return "debug"
}

// ParseLogLevel returns the level named s ("debug", "info", "warn" or
// "error").
func ParseLogLevel(s string) (LogLevel, bool) {
	for _, l := range LogLevels {
		if l.String() == s {
			return l, true
		}
	}
	return 0, false
}

// ClientLog is one line an agent shipped to the server. Time is when the
// agent logged it (by the agent's clock); ReceivedAt when the server stored
// it, which is what retention counts from.
type ClientLog struct {
	ID         string
	ClientID   string
	BackupID   string // the backup the line is about, if any (always one of ClientID's)
	RestoreID  string // the restore the line is about, if any (always one ClientID ran)
	Level      LogLevel
	Message    string
	Attrs      map[string]string
	Time       time.Time
	ReceivedAt time.Time
}
