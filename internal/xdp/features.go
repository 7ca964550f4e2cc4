package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Features is what the kernel says a device can do with XDP (the netdev
// generic netlink family, Linux 6.3 and later; include/uapi/linux/netdev.h).
type Features uint64

const (
	// FeatureBasic: a native program runs, and XDP_PASS, DROP and TX work.
	FeatureBasic Features = 1 << iota
	// FeatureRedirect: a native program on the device may redirect.
	FeatureRedirect
	// FeatureNdoXmit: the device takes frames redirected to it. A veth
	// reports it only while its peer runs an XDP program or has GRO on,
	// which is also what its XDP_TX needs (the frame goes to the peer).
	FeatureNdoXmit
)

// Generic netlink: the controller, and the netdev family.
const (
	genlCtrlID            = 0x10
	genlCtrlCmdGetFamily  = 3
	genlCtrlAttrFamilyID  = 1
	genlCtrlAttrFamilyNm  = 2
	netdevCmdDevGet       = 1
	netdevAttrIfindex     = 1
	netdevAttrXDPFeatures = 3
)

// ErrNoFeatures means the kernel does not report XDP features (before 6.3).
var ErrNoFeatures = errors.New("xdp: the kernel does not report XDP features")

// DeviceFeatures asks the kernel for the XDP features of interface ifindex
// in the calling thread's network namespace. (A small codec of its own:
// vishvananda/netlink sends generic netlink headers with stray bytes in the
// reserved field, which kernels refuse at random.)
func DeviceFeatures(ifindex int) (Features, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return 0, fmt.Errorf("xdp: features of interface %d: %w", ifindex, os.NewSyscallError("socket", err))
	}
	defer unix.Close(fd)
	name := append([]byte("netdev"), 0)
	attrs, err := genlRequest(fd, genlCtrlID, genlCtrlCmdGetFamily, genlAttr(genlCtrlAttrFamilyNm, name))
	if err != nil {
		return 0, fmt.Errorf("%w: netdev netlink family: %v", ErrNoFeatures, err)
	}
	fam, ok := attrs[genlCtrlAttrFamilyID]
	if !ok || len(fam) < 2 {
		return 0, fmt.Errorf("%w: no netdev netlink family id", ErrNoFeatures)
	}
	idx := binary.NativeEndian.AppendUint32(nil, uint32(ifindex))
	attrs, err = genlRequest(fd, binary.NativeEndian.Uint16(fam), netdevCmdDevGet, genlAttr(netdevAttrIfindex, idx))
	if err != nil {
		return 0, fmt.Errorf("xdp: features of interface %d: %w", ifindex, err)
	}
	f, ok := attrs[netdevAttrXDPFeatures]
	if !ok || len(f) != 8 {
		return 0, fmt.Errorf("%w: none in the answer for interface %d", ErrNoFeatures, ifindex)
	}
	return Features(binary.NativeEndian.Uint64(f)), nil
}

// genlAttr encodes one netlink attribute, padded to 4 bytes.
func genlAttr(typ uint16, val []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(val)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// genlRequest sends one generic netlink request and returns the top-level
// attributes of its answer.
func genlRequest(fd int, family uint16, cmd uint8, attrs []byte) (map[uint16][]byte, error) {
	const hdr = unix.NLMSG_HDRLEN + 4 // nlmsghdr, genlmsghdr
	msg := make([]byte, hdr, hdr+len(attrs))
	binary.NativeEndian.PutUint32(msg[0:], uint32(hdr+len(attrs)))
	binary.NativeEndian.PutUint16(msg[4:], family)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(msg[8:], 1) // sequence
	msg[16], msg[17] = cmd, 1                 // command, version; reserved stays 0
	msg = append(msg, attrs...)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto", err)
	}
	buf := make([]byte, 16384)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, os.NewSyscallError("recvfrom", err)
	}
	return parseGenlAnswer(buf[:n])
}

// parseGenlAnswer reads the first message of a generic netlink answer: an
// error, or the top-level attributes after the generic netlink header.
func parseGenlAnswer(buf []byte) (map[uint16][]byte, error) {
	msgs, err := syscall.ParseNetlinkMessage(buf)
	if err != nil || len(msgs) == 0 {
		return nil, fmt.Errorf("answer of %d bytes: %v", len(buf), err)
	}
	m := msgs[0]
	if m.Header.Type == unix.NLMSG_ERROR {
		if len(m.Data) >= 4 {
			if errno := -int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return nil, unix.Errno(errno)
			}
		}
		return nil, errors.New("an empty answer")
	}
	if len(m.Data) < 4 {
		return nil, fmt.Errorf("answer of %d bytes: too short", len(m.Data))
	}
	out := map[uint16][]byte{}
	for b := m.Data[4:]; len(b) >= 4; {
		l := int(binary.NativeEndian.Uint16(b))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("attribute of length %d in %d bytes", l, len(b))
		}
		out[binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)] = b[4:l]
		b = b[min(len(b), (l+3)&^3):]
	}
	return out, nil
}
