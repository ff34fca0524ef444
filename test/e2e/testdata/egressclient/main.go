// Command egressclient is TestEgress's HTTP(S) client inside the guest
// (the test image has no curl): it fetches a URL and prints "status N"
// and the body, or "error: ..." on failure.
//
//	egressclient [-ca FILE] [-sni NAME] [-host NAME] [-connect IP:PORT] [-header K:V] URL
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	caFile := flag.String("ca", "", "PEM file of the CA to trust")
	sni := flag.String("sni", "", "TLS server name to send instead of the URL's host")
	host := flag.String("host", "", "Host header to send instead of the URL's host")
	connect := flag.String("connect", "", "IP:PORT to connect to instead of resolving the URL's host")
	header := flag.String("header", "", "an extra header, K:V")
	flag.Parse()
	tc := &tls.Config{ServerName: *sni}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		tc.RootCAs = x509.NewCertPool()
		tc.RootCAs.AppendCertsFromPEM(pem)
	}
	d := &net.Dialer{Timeout: 8 * time.Second}
	tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true, Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if *connect != "" {
				addr = *connect
			}
			return d.DialContext(ctx, network, addr)
		}}
	req, err := http.NewRequest("GET", flag.Arg(0), nil)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if *host != "" {
		req.Host = *host
	}
	if k, v, ok := strings.Cut(*header, ":"); ok {
		req.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Printf("status %d\n%s\n", resp.StatusCode, body)
}
