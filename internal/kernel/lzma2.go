package kernel

import (
	"errors"
	"fmt"
	"io"
)

// This file is an LZMA2 decoder (the codec inside .xz files), written for
// speed: github.com/ulikunitz/xz/lzma decodes a Debian kernel package's
// data.tar.xz at about a quarter of the speed of xz(1). It follows the
// structure of the public-domain xz-embedded decoder by Lasse Collin and
// Igor Pavlov.

const (
	lzmaStates       = 12
	lzmaLitStates    = 7
	lzmaPosStatesMax = 16
	lzmaMatchLenMin  = 2
	lzmaLenLow       = 8
	lzmaLenMid       = 8
	lzmaLenHigh      = 256
	lzmaDistStates   = 4
	lzmaDistSlots    = 64
	lzmaDistModStart = 4
	lzmaDistModEnd   = 14
	lzmaFullDist     = 128
	lzmaAlignBits    = 4
	lzmaLitCoderSize = 0x300
	lzmaProbInit     = 1 << 10

	lzma2MaxChunk = 2 << 20 // largest unpacked size of one chunk
	lzma2MaxDict  = 1536 << 20
)

type lzmaLenDec struct {
	choice  uint16
	choice2 uint16
	low     [lzmaPosStatesMax][lzmaLenLow]uint16
	mid     [lzmaPosStatesMax][lzmaLenMid]uint16
	high    [lzmaLenHigh]uint16
}

// lzmaProbs is the adaptive model of an LZMA decoder.
type lzmaProbs struct {
	isMatch     [lzmaStates][lzmaPosStatesMax]uint16
	isRep       [lzmaStates]uint16
	isRep0      [lzmaStates]uint16
	isRep1      [lzmaStates]uint16
	isRep2      [lzmaStates]uint16
	isRep0Long  [lzmaStates][lzmaPosStatesMax]uint16
	distSlot    [lzmaDistStates][lzmaDistSlots]uint16
	distSpecial [lzmaFullDist - lzmaDistModEnd + 1]uint16 // [0] unused, see decode
	distAlign   [1 << lzmaAlignBits]uint16
	matchLen    lzmaLenDec
	repLen      lzmaLenDec
	literal     [16][lzmaLitCoderSize]uint16
}

// rangeDec is a range decoder over one chunk's compressed bytes. Reading
// past the end yields zeros and sets overrun.
type rangeDec struct {
	rng, code uint32
	in        []byte
	pos       int
	overrun   bool
}

func (rc *rangeDec) init(in []byte) error {
	if len(in) < 5 || in[0] != 0 {
		return errors.New("lzma2: bad range coder start")
	}
	rc.in = in
	rc.rng = 0xffffffff
	rc.code = uint32(in[1])<<24 | uint32(in[2])<<16 | uint32(in[3])<<8 | uint32(in[4])
	rc.pos = 5
	rc.overrun = false
	return nil
}

func (rc *rangeDec) normalize() {
	if rc.rng < 1<<24 {
		rc.rng <<= 8
		if rc.pos < len(rc.in) {
			rc.code = rc.code<<8 | uint32(rc.in[rc.pos])
			rc.pos++
		} else {
			rc.code <<= 8
			rc.overrun = true
		}
	}
}

func (rc *rangeDec) bit(p *uint16) uint32 {
	rc.normalize()
	bound := (rc.rng >> 11) * uint32(*p)
	if rc.code < bound {
		rc.rng = bound
		*p += (1<<11 - *p) >> 5
		return 0
	}
	rc.rng -= bound
	rc.code -= bound
	*p -= *p >> 5
	return 1
}

func (rc *rangeDec) bittree(probs []uint16, limit uint32) uint32 {
	sym := uint32(1)
	for sym < limit {
		sym = sym<<1 | rc.bit(&probs[sym])
	}
	return sym
}

func (rc *rangeDec) bittreeReverse(probs []uint16, dest *uint32, limit uint32) {
	sym := uint32(1)
	for i := uint32(0); i < limit; i++ {
		b := rc.bit(&probs[sym])
		sym = sym<<1 | b
		*dest += b << i
	}
}

func (rc *rangeDec) direct(dest *uint32, limit uint32) {
	for ; limit > 0; limit-- {
		rc.normalize()
		rc.rng >>= 1
		rc.code -= rc.rng
		mask := 0 - (rc.code >> 31)
		rc.code += rc.rng & mask
		*dest = *dest<<1 + (mask + 1)
	}
}

// lzma2Reader decodes an LZMA2 chunk sequence read from r, up to and
// including its end marker; it reads nothing after that.
type lzma2Reader struct {
	r io.Reader

	// Dictionary: a linear buffer; buf[:pos] is history, the most recent
	// dictSize bytes of which matches may reach. out is the first byte not
	// yet handed to the caller.
	buf      []byte
	pos      int
	out      int
	maxBuf   int
	dictSize int
	total    uint64 // bytes since the last dictionary reset

	lc, lp, pb uint32
	state      uint32
	rep        [4]uint32
	probs      *lzmaProbs
	rc         rangeDec
	packed     []byte
	needDict   bool
	needProps  bool
	end        bool
	err        error
}

// newLZMA2Reader returns a decoder for LZMA2 data with the given dictionary
// size (from the xz filter properties).
func newLZMA2Reader(r io.Reader, dictSize int) (*lzma2Reader, error) {
	if dictSize > lzma2MaxDict {
		return nil, fmt.Errorf("lzma2: dictionary of %d bytes is too large", dictSize)
	}
	dictSize = max(dictSize, 4096)
	return &lzma2Reader{
		r:         r,
		dictSize:  dictSize,
		maxBuf:    2*dictSize + lzma2MaxChunk,
		probs:     new(lzmaProbs),
		needDict:  true,
		needProps: true,
	}, nil
}

func (z *lzma2Reader) Read(p []byte) (int, error) {
	for {
		if z.out < z.pos {
			n := copy(p, z.buf[z.out:z.pos])
			z.out += n
			return n, nil
		}
		if z.err != nil {
			return 0, z.err
		}
		if z.end {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		if err := z.chunk(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			z.err = err
		}
	}
}

// room makes buf hold at least n more bytes after pos, growing it up to
// maxBuf and then sliding the last dictSize bytes of history to the front.
// Everything before pos must have been handed out.
func (z *lzma2Reader) room(n int) {
	if z.pos+n <= len(z.buf) {
		return
	}
	if z.pos+n > z.maxBuf {
		keep := min(z.pos, z.dictSize)
		copy(z.buf, z.buf[z.pos-keep:z.pos])
		z.pos, z.out = keep, keep
		if z.pos+n <= len(z.buf) {
			return
		}
	}
	size := min(z.maxBuf, max(z.pos+n, 2*len(z.buf)))
	nb := make([]byte, size)
	copy(nb, z.buf[:z.pos])
	z.buf = nb
}

func (z *lzma2Reader) resetDict() {
	z.pos, z.out, z.total = 0, 0, 0
	z.needDict = false
}

func (z *lzma2Reader) resetState() {
	z.state = 0
	z.rep = [4]uint32{}
	p := z.probs
	fill := func(s []uint16) {
		for i := range s {
			s[i] = lzmaProbInit
		}
	}
	for i := range p.isMatch {
		fill(p.isMatch[i][:])
		fill(p.isRep0Long[i][:])
	}
	fill(p.isRep[:])
	fill(p.isRep0[:])
	fill(p.isRep1[:])
	fill(p.isRep2[:])
	for i := range p.distSlot {
		fill(p.distSlot[i][:])
	}
	fill(p.distSpecial[:])
	fill(p.distAlign[:])
	for _, l := range []*lzmaLenDec{&p.matchLen, &p.repLen} {
		l.choice, l.choice2 = lzmaProbInit, lzmaProbInit
		for i := range l.low {
			fill(l.low[i][:])
			fill(l.mid[i][:])
		}
		fill(l.high[:])
	}
	for i := range p.literal {
		fill(p.literal[i][:])
	}
}

// chunk decodes the next chunk into the dictionary.
func (z *lzma2Reader) chunk() error {
	var hdr [6]byte
	if _, err := io.ReadFull(z.r, hdr[:1]); err != nil {
		return err
	}
	ctl := hdr[0]
	if ctl == 0 {
		z.end = true
		return nil
	}
	if ctl >= 0xe0 || ctl == 0x01 {
		z.needProps = true
		z.resetDict()
	} else if z.needDict {
		return errors.New("lzma2: missing dictionary reset")
	}
	if ctl < 0x80 {
		if ctl > 2 {
			return fmt.Errorf("lzma2: bad control byte %#x", ctl)
		}
		if _, err := io.ReadFull(z.r, hdr[1:3]); err != nil {
			return err
		}
		n := int(hdr[1])<<8 | int(hdr[2]) + 1
		z.room(n)
		if _, err := io.ReadFull(z.r, z.buf[z.pos:z.pos+n]); err != nil {
			return err
		}
		z.pos += n
		z.total += uint64(n)
		return nil
	}
	hlen := 5
	if ctl >= 0xc0 {
		hlen = 6
	}
	if _, err := io.ReadFull(z.r, hdr[1:hlen]); err != nil {
		return err
	}
	unpacked := int(ctl&0x1f)<<16 | int(hdr[1])<<8 | int(hdr[2]) + 1
	packed := int(hdr[3])<<8 | int(hdr[4]) + 1
	if ctl >= 0xc0 {
		if err := z.setProps(hdr[5]); err != nil {
			return err
		}
		z.needProps = false
		z.resetState()
	} else if z.needProps {
		return errors.New("lzma2: missing properties")
	} else if ctl >= 0xa0 {
		z.resetState()
	}
	if cap(z.packed) < packed {
		z.packed = make([]byte, packed, 1<<16)
	}
	z.packed = z.packed[:packed]
	if _, err := io.ReadFull(z.r, z.packed); err != nil {
		return err
	}
	if err := z.rc.init(z.packed); err != nil {
		return err
	}
	z.room(unpacked)
	if err := z.decode(unpacked); err != nil {
		return err
	}
	z.rc.normalize()
	if z.rc.overrun || z.rc.pos != len(z.packed) || z.rc.code != 0 {
		return errors.New("lzma2: corrupt chunk")
	}
	return nil
}

func (z *lzma2Reader) setProps(b byte) error {
	if b > (4*5+4)*9+8 {
		return errors.New("lzma2: bad properties")
	}
	pb := uint32(b) / 45
	rest := uint32(b) - pb*45
	lp := rest / 9
	lc := rest - lp*9
	if lc+lp > 4 {
		return errors.New("lzma2: lc + lp exceeds 4")
	}
	z.lc, z.lp, z.pb = lc, lp, pb
	return nil
}

func (z *lzma2Reader) lenDecode(l *lzmaLenDec, posState uint32) uint32 {
	rc := &z.rc
	if rc.bit(&l.choice) == 0 {
		return lzmaMatchLenMin + rc.bittree(l.low[posState][:], lzmaLenLow) - lzmaLenLow
	}
	if rc.bit(&l.choice2) == 0 {
		return lzmaMatchLenMin + lzmaLenLow + rc.bittree(l.mid[posState][:], lzmaLenMid) - lzmaLenMid
	}
	return lzmaMatchLenMin + lzmaLenLow + lzmaLenMid + rc.bittree(l.high[:], lzmaLenHigh) - lzmaLenHigh
}

// decode decodes exactly n bytes of the current LZMA chunk into buf at pos
// (room for them has been made).
func (z *lzma2Reader) decode(n int) error {
	rc := &z.rc
	p := z.probs
	buf := z.buf
	pos := z.pos
	end := pos + n
	total := z.total
	state := z.state
	rep0, rep1, rep2, rep3 := z.rep[0], z.rep[1], z.rep[2], z.rep[3]
	posMask := uint32(1)<<z.pb - 1
	lpMask := uint32(1)<<z.lp - 1
	lc := z.lc
	dictSize := uint64(z.dictSize)

	for pos < end {
		posState := uint32(total) & posMask
		if rc.bit(&p.isMatch[state][posState]) == 0 {
			// Literal.
			var prev uint32
			if total > 0 {
				prev = uint32(buf[pos-1])
			}
			probs := p.literal[((uint32(total)&lpMask)<<lc)+(prev>>(8-lc))][:]
			sym := uint32(1)
			if state < lzmaLitStates {
				for sym < 0x100 {
					sym = sym<<1 | rc.bit(&probs[sym])
				}
			} else {
				if uint64(rep0) >= total || uint64(rep0) >= dictSize {
					return errors.New("lzma2: corrupt data (distance)")
				}
				matchByte := uint32(buf[pos-int(rep0)-1]) << 1
				offset := uint32(0x100)
				for sym < 0x100 {
					matchBit := matchByte & offset
					matchByte <<= 1
					if rc.bit(&probs[offset+matchBit+sym]) == 1 {
						sym = sym<<1 | 1
						offset = matchBit
					} else {
						sym <<= 1
						offset ^= matchBit
					}
				}
			}
			buf[pos] = byte(sym)
			pos++
			total++
			switch {
			case state <= 3:
				state = 0
			case state <= 9:
				state -= 3
			default:
				state -= 6
			}
			continue
		}

		var length uint32
		if rc.bit(&p.isRep[state]) == 0 {
			// Match with a new distance.
			if state < lzmaLitStates {
				state = 7
			} else {
				state = 10
			}
			rep3, rep2, rep1 = rep2, rep1, rep0
			length = z.lenDecode(&p.matchLen, posState)
			distState := length - lzmaMatchLenMin
			if distState >= lzmaDistStates {
				distState = lzmaDistStates - 1
			}
			slot := rc.bittree(p.distSlot[distState][:], lzmaDistSlots) - lzmaDistSlots
			if slot < lzmaDistModStart {
				rep0 = slot
			} else {
				limit := slot>>1 - 1
				rep0 = (2 | slot&1) << limit
				if slot < lzmaDistModEnd {
					// xz-embedded indexes dist_special from
					// rep0 - slot - 1, which is -1 for slot 4;
					// the array here starts one element earlier.
					rc.bittreeReverse(p.distSpecial[rep0-slot:], &rep0, limit)
				} else {
					var d uint32
					rc.direct(&d, limit-lzmaAlignBits)
					rep0 += d << lzmaAlignBits
					rc.bittreeReverse(p.distAlign[:], &rep0, lzmaAlignBits)
				}
			}
		} else {
			if rc.bit(&p.isRep0[state]) == 0 {
				if rc.bit(&p.isRep0Long[state][posState]) == 0 {
					// Short rep: one byte at distance rep0.
					if state < lzmaLitStates {
						state = 9
					} else {
						state = 11
					}
					if uint64(rep0) >= total || uint64(rep0) >= dictSize {
						return errors.New("lzma2: corrupt data (distance)")
					}
					buf[pos] = buf[pos-int(rep0)-1]
					pos++
					total++
					continue
				}
			} else {
				var d uint32
				if rc.bit(&p.isRep1[state]) == 0 {
					d = rep1
				} else {
					if rc.bit(&p.isRep2[state]) == 0 {
						d = rep2
					} else {
						d = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = d
			}
			if state < lzmaLitStates {
				state = 8
			} else {
				state = 11
			}
			length = z.lenDecode(&p.repLen, posState)
		}

		// Copy length bytes from distance rep0 + 1.
		if uint64(rep0) >= total || uint64(rep0) >= dictSize {
			return errors.New("lzma2: corrupt data (distance)")
		}
		if int(length) > end-pos {
			return errors.New("lzma2: corrupt data (match past chunk end)")
		}
		src := pos - int(rep0) - 1
		if int(rep0)+1 >= int(length) {
			copy(buf[pos:pos+int(length)], buf[src:src+int(length)])
		} else {
			for i := 0; i < int(length); i++ {
				buf[pos+i] = buf[src+i]
			}
		}
		pos += int(length)
		total += uint64(length)
	}
	z.pos = pos
	z.total = total
	z.state = state
	z.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return nil
}
