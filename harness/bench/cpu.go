package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// proc names a process whose CPU time a run accounts for.
type proc struct {
	name string
	pid  int
}

// CPU is the CPU time each process used during a run, in cores (CPU seconds per second of the
// run), in the order of Names.
type CPU struct {
	Names []string
	Cores []float64
}

// Total is the sum over processes, in cores.
func (c CPU) Total() float64 {
	t := 0.0
	for _, v := range c.Cores {
		t += v
	}
	return t
}

// Of returns the cores process name used.
func (c CPU) Of(name string) float64 {
	for i, n := range c.Names {
		if n == name {
			return c.Cores[i]
		}
	}
	return 0
}

type cpuSample struct {
	procs []proc
	ticks []int64
	busy  int64 // the whole machine's busy time, from /proc/stat
}

// Other is the name of the CPU used by every other process on the machine during a run.
const Other = "everything else on the machine"

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux we run on.
const clockTicks = 100

func sampleCPU(procs []proc) cpuSample {
	s := cpuSample{procs: procs, ticks: make([]int64, len(procs))}
	for i, p := range procs {
		s.ticks[i] = procTicks(p.pid)
	}
	s.busy = machineTicks()
	return s
}

func (s cpuSample) since(before cpuSample, wall time.Duration) CPU {
	var c CPU
	ours := int64(0)
	for i, p := range s.procs {
		d := s.ticks[i] - before.ticks[i]
		ours += d
		c.Names = append(c.Names, p.name)
		c.Cores = append(c.Cores, float64(d)/clockTicks/wall.Seconds())
	}
	if s.busy > 0 && before.busy > 0 {
		c.Names = append(c.Names, Other)
		c.Cores = append(c.Cores, max(0, float64(s.busy-before.busy-ours))/clockTicks/wall.Seconds())
	}
	return c
}

// machineTicks returns the time all CPUs spent busy (not idle or waiting for I/O), in clock
// ticks, or 0 when it cannot be read.
func machineTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var t int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user time
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		t += n
	}
	return t
}

// procTicks returns the user+system CPU time of pid and its waited-for children, in clock
// ticks, or 0 when it cannot be read.
func procTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; fields after it are counted from its ")".
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	var t int64
	for _, i := range []int{11, 12} { // utime, stime (fields 14 and 15 of stat)
		n, _ := strconv.ParseInt(f[i], 10, 64)
		t += n
	}
	return t
}

// emulatorPID finds the emulator JVM listening on host ("127.0.0.1:PORT") by its command line,
// or returns 0.
func emulatorPID(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return 0
	}
	want := "--port=" + host[i+1:]
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "java" {
			continue
		}
		for _, a := range args {
			if a == want {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
				return pid
			}
		}
	}
	return 0
}
