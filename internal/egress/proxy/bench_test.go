package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"banger/internal/egress/policy"
)

const benchBig = 100 << 20

// BenchmarkProxyOverhead measures, in one run on loopback, what the proxy
// adds to an HTTPS request on a fresh connection (median of 200) and to a
// 100 MiB download (median of three), direct vs through the proxy (transparent pass-through,
// and interception with a secret substituted), and reports the ratios.
// Not an assertion: loopback on a shared machine is noisy.
func BenchmarkProxyOverhead(b *testing.B) {
	e := newEnv(b, policy.Spec{Allow: []string{"api.test"}, Secrets: []policy.SecretSpec{{Name: "MY_KEY", Hosts: []string{"sec.test"}}}})
	zeros := make([]byte, 1<<20)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Header().Set("Content-Length", fmt.Sprint(benchBig))
			for i := 0; i < benchBig/len(zeros); i++ {
				if _, err := w.Write(zeros); err != nil {
					return
				}
			}
			return
		}
		io.WriteString(w, "ok")
	})
	servers := map[string]*httptest.Server{}
	for _, name := range []string{"api.test", "sec.test"} {
		srv := httptest.NewUnstartedServer(h)
		leaf, _ := e.upCA.Leaf(name)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{*leaf}}
		srv.StartTLS()
		b.Cleanup(srv.Close)
		servers[name] = srv
		e.res.set(name, "127.0.0.1")
	}
	apiAddr := netip.MustParseAddrPort(strings.TrimPrefix(servers["api.test"].URL, "https://"))
	secAddr := netip.MustParseAddrPort(strings.TrimPrefix(servers["sec.test"].URL, "https://"))
	e.vm.RecordAnswer("api.test", []netip.Addr{apiAddr.Addr()}, time.Hour)
	e.vm.RecordAnswer("sec.test", []netip.Addr{secAddr.Addr()}, time.Hour)
	ph := e.placeholder("MY_KEY")

	type path struct {
		name string
		c    *http.Client
		url  string
		hdr  []string
	}
	direct := e.client(apiAddr.String(), false, e.upPool, nil)
	paths := []path{
		{"direct", direct, fmt.Sprintf("https://api.test:%d", apiAddr.Port()), nil},
		{"passthrough", e.client(e.transparent(apiAddr), false, e.upPool, nil), fmt.Sprintf("https://api.test:%d", apiAddr.Port()), nil},
		{"intercept", e.client(e.transparent(secAddr), false, e.bangerPool, nil), fmt.Sprintf("https://sec.test:%d", secAddr.Port()), []string{"Authorization", "Bearer " + ph}},
	}
	const rounds = 200
	median := map[string]time.Duration{}
	rate := map[string]float64{}
	for i := 0; i < b.N; i++ {
		lat := map[string][]time.Duration{}
		for r := 0; r < rounds; r++ { // interleaved, so load hits all alike
			for _, p := range paths {
				start := time.Now()
				code, _, err := get(p.c, p.url+"/small", p.hdr...)
				if err != nil || code != 200 {
					b.Fatalf("%s: %d %v", p.name, code, err)
				}
				lat[p.name] = append(lat[p.name], time.Since(start))
			}
		}
		for _, p := range paths {
			l := lat[p.name]
			sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
			median[p.name] = l[len(l)/2]
		}
		rates := map[string][]float64{}
		for r := 0; r < 3; r++ { // interleaved; the median of three
			for _, p := range paths {
				req, _ := http.NewRequest("GET", p.url+"/big", nil)
				for j := 0; j+1 < len(p.hdr); j += 2 {
					req.Header.Set(p.hdr[j], p.hdr[j+1])
				}
				start := time.Now()
				resp, err := p.c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != benchBig {
					b.Fatalf("%s: %d bytes, %v", p.name, n, err)
				}
				rates[p.name] = append(rates[p.name], float64(n)/(1<<20)/time.Since(start).Seconds())
			}
		}
		for name, rs := range rates {
			sort.Float64s(rs)
			rate[name] = rs[1]
		}
	}
	for _, p := range paths {
		b.ReportMetric(float64(median[p.name].Microseconds()), p.name+"-median-us")
		b.ReportMetric(rate[p.name], p.name+"-MiB/s")
	}
	for _, p := range paths[1:] {
		b.ReportMetric(float64((median[p.name] - median["direct"]).Microseconds()), p.name+"-added-us")
		b.ReportMetric(rate[p.name]/rate["direct"], p.name+"-throughput-ratio")
		b.ReportMetric(float64(median[p.name])/float64(median["direct"]), p.name+"-latency-ratio")
	}
}
