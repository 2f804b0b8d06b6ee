package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// State is what enrollment leaves in the state directory (state.json, mode
// 0600): the server and the client credential.
type State struct {
	Server     string `json:"server"`
	ClientID   string `json:"client_id"`
	Name       string `json:"name"`
	Credential string `json:"credential"`
}

// stateFile is the name of the state file in the state directory.
const stateFile = "state.json"

// EnvStateDir names the environment variable that overrides the default
// state directory.
const EnvStateDir = "COFFER_STATE_DIR"

// DefaultStateDir returns the state directory to use when none is given:
// $COFFER_STATE_DIR; else /var/lib/coffer-agent for root; else
// $XDG_STATE_HOME/coffer-agent, or ~/.local/state/coffer-agent.
func DefaultStateDir() string {
	if d := os.Getenv(EnvStateDir); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/coffer-agent"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "coffer-agent")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "coffer-agent")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("coffer-agent-%d", os.Geteuid()))
}

// ErrNotEnrolled is matched by LoadState's error when the state directory
// holds no enrollment.
var ErrNotEnrolled = errors.New("this machine's agent is not enrolled")

// LoadState reads the state directory's enrollment.
func LoadState(dir string) (*State, error) {
	p := filepath.Join(dir, stateFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist; run `coffer agent enroll --server URL --token T` (with --state-dir %s if that is not the default)",
			ErrNotEnrolled, p, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read the agent state: %w (run as the user that enrolled the agent, or pass --state-dir)", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read the agent state %s: %w: remove it and enroll again", p, err)
	}
	if st.Server == "" || st.ClientID == "" || st.Credential == "" {
		return nil, fmt.Errorf("the agent state %s lacks the server, client id or credential: remove it and enroll again", p)
	}
	return &st, nil
}

// saveState writes st to dir/state.json atomically, mode 0600.
func saveState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, stateFile), append(b, '\n'))
}

// writeFileAtomic writes data to name through a temporary file in the same
// directory (mode 0600), synced and renamed over name, then syncs the
// directory: after a crash name holds the old content or the new, whole.
func writeFileAtomic(name string, data []byte) error {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// EnrollOptions configure Enroll.
type EnrollOptions struct {
	Server   string // the server's URL
	Token    string // the one-time enrollment token (cfr_e_…)
	Name     string // the client's name ("": the token's name, else the hostname)
	StateDir string // "": DefaultStateDir()
	// HTTPClient sends the request (default: a plain client).
	HTTPClient *http.Client
	// Version is this agent's version, reported to the server.
	Version string
}

// Enroll exchanges an enrollment token for a client credential and stores
// it in the state directory (created 0700 if missing). It refuses to
// replace an existing enrollment: remove state.json first to enroll again.
func Enroll(ctx context.Context, o EnrollOptions) (*State, error) {
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if !strings.HasPrefix(o.Token, protocol.EnrollPrefix) {
		return nil, fmt.Errorf("the enrollment token should start with %q: copy it whole from the server (POST /api/v1/enrollment-tokens)", protocol.EnrollPrefix)
	}
	p := filepath.Join(o.StateDir, stateFile)
	if old, err := LoadState(o.StateDir); err == nil {
		return nil, fmt.Errorf("this agent is already enrolled as %q (client %s) with %s: to enroll it again, remove %s first",
			old.Name, old.ClientID, old.Server, p)
	} else if !errors.Is(err, ErrNotEnrolled) {
		return nil, fmt.Errorf("%w; to enroll again, remove %s first", err, p)
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the state directory: %w", err)
	}
	// The token works once: make sure the credential can be stored before
	// spending it.
	probe, err := os.CreateTemp(o.StateDir, ".probe-*")
	if err != nil {
		return nil, fmt.Errorf("the state directory %s is not writable: %w", o.StateDir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	c, err := apiclient.New(apiclient.Options{Server: o.Server, HTTPClient: o.HTTPClient, UserAgent: userAgent(o.Version)})
	if err != nil {
		return nil, err
	}
	resp, err := c.Enroll(ctx, protocol.EnrollRequest{Token: o.Token, Name: o.Name, MachineInfo: machineInfo(o.Version)})
	if err != nil {
		return nil, fmt.Errorf("enroll with %s: %w", o.Server, err)
	}
	st := &State{Server: strings.TrimSpace(o.Server), ClientID: resp.Client.ID, Name: resp.Client.Name, Credential: resp.Credential}
	if err := saveState(o.StateDir, st); err != nil {
		return nil, fmt.Errorf("the server enrolled client %s, but its credential could not be stored (delete that client on the server and enroll again with a new token): %w",
			st.ClientID, err)
	}
	return st, nil
}

func userAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "coffer-agent/" + version
}

// machineInfo describes this machine: hostname, OS and architecture, and
// the addresses of its interfaces that are up (not loopback, not
// link-local IPv6).
func machineInfo(version string) protocol.MachineInfo {
	host, _ := os.Hostname()
	mi := protocol.MachineInfo{Hostname: truncate(host, 255), OS: runtime.GOOS, Arch: runtime.GOARCH, AgentVersion: truncate(version, 64),
		IPv4: []string{}, IPv6: []string{}}
	ifaces, err := net.Interfaces()
	if err != nil {
		return mi
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.IsLoopback() {
				continue
			}
			if v4 := ipn.IP.To4(); v4 != nil {
				mi.IPv4 = append(mi.IPv4, v4.String())
			} else if !ipn.IP.IsLinkLocalUnicast() {
				mi.IPv6 = append(mi.IPv6, ipn.IP.String())
			}
		}
	}
	slices.Sort(mi.IPv4)
	slices.Sort(mi.IPv6)
	mi.IPv4, mi.IPv6 = firstN(slices.Compact(mi.IPv4), 64), firstN(slices.Compact(mi.IPv6), 64)
	return mi
}

// firstN returns at most the first n elements of s (the server's limits).
func firstN[T any](s []T, n int) []T { return s[:min(len(s), n)] }
