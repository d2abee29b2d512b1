package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a benchmark ran.
type Machine struct {
	CPU       string // model name
	Cores     int    // logical CPUs
	MemoryGB  float64
	Kernel    string
	Go        string
	Java      string
	Emulators string // Firestore and Pub/Sub emulator versions
	Commit    string // git commit of the working tree, "+dirty" when it has uncommitted changes
}

// DescribeMachine finds out what it can; unknown fields are left empty.
func DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGB = kb / 1024 / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Java = firstLine(command("java", "-version"))
	m.Emulators = emulatorVersions()
	m.Commit = strings.TrimSpace(command("git", "rev-parse", "--short=12", "HEAD"))
	if m.Commit != "" && strings.TrimSpace(command("git", "status", "--porcelain", "--untracked-files=no")) != "" {
		m.Commit += "+dirty"
	}
	return m
}

func command(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

// emulatorVersions reads the installed SDK components' versions.
func emulatorVersions() string {
	sdk := strings.TrimSpace(command("gcloud", "info", "--format=value(installation.sdk_root)"))
	if sdk == "" {
		return ""
	}
	var out []string
	for _, c := range []struct{ id, name string }{{"cloud-firestore-emulator", "Firestore emulator"}, {"pubsub-emulator", "Pub/Sub emulator"}} {
		b, err := os.ReadFile(filepath.Join(sdk, ".install", c.id+".snapshot.json"))
		if err != nil {
			continue
		}
		var snap struct {
			Components []struct {
				ID      string `json:"id"`
				Version struct {
					String string `json:"version_string"`
				} `json:"version"`
			} `json:"components"`
		}
		if json.Unmarshal(b, &snap) != nil {
			continue
		}
		for _, comp := range snap.Components {
			if comp.ID == c.id {
				out = append(out, c.name+" "+comp.Version.String)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(sdk, "VERSION")); err == nil {
		out = append(out, "Cloud SDK "+strings.TrimSpace(string(b)))
	}
	return strings.Join(out, ", ")
}
