package nftrules

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Rules are programmed with netlink messages built here rather than with nftables.Conn.AddRule, for one
// expression: `ct original ip daddr` is the conntrack key NFT_CT_DST_IP, which the kernel only accepts with
// a direction attribute, and google/nftables (v0.3.0) sends the direction only for the generic
// NFT_CT_DST key. The generic key would match the same packets, but nft cannot list a lookup on it (nft
// 1.0.6 aborts on an assertion), and an agent must never break `nft list ruleset` on its node. Every other
// expression is still marshalled by google/nftables.

// rawExpr is an expression already encoded as its NFTA_EXPR_NAME and NFTA_EXPR_DATA attributes.
type rawExpr []byte

// ctOriginalDaddr is `ct original ip daddr` (or ip6): load the original direction's destination address.
func ctOriginalDaddr(nfproto byte) rawExpr {
	key := uint32(unix.NFT_CT_DST_IP)
	if nfproto == unix.NFPROTO_IPV6 {
		key = unix.NFT_CT_DST_IP6
	}
	data := mustMarshal([]netlink.Attribute{
		{Type: unix.NFTA_CT_KEY, Data: binary.BigEndian.AppendUint32(nil, key)},
		{Type: unix.NFTA_CT_DREG, Data: binary.BigEndian.AppendUint32(nil, unix.NFT_REG_1)},
		{Type: unix.NFTA_CT_DIRECTION, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL; the attribute is a u8
	})
	return rawExpr(mustMarshal([]netlink.Attribute{
		{Type: unix.NFTA_EXPR_NAME, Data: []byte("ct\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_EXPR_DATA, Data: data},
	}))
}

// mustMarshal encodes attributes; it only fails on an attribute longer than 64 KiB, which the fixed
// definitions here never build.
func mustMarshal(attrs []netlink.Attribute) []byte {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		panic(fmt.Sprintf("nftrules: marshal attributes: %v", err))
	}
	return b
}

// nftMessage is one nf_tables message for the inet family.
func nftMessage(msgType uint16, flags netlink.HeaderFlags, attrs []netlink.Attribute) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msgType), Flags: flags},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, mustMarshal(attrs)...),
	}
}

// ruleMessages flushes both chains and appends every rule: the kernel applies them in one transaction,
// so the chains are never seen empty.
func ruleMessages(pods podMatch) ([]netlink.Message, error) {
	var msgs []netlink.Message
	for _, c := range chainDefs {
		msgs = append(msgs, nftMessage(unix.NFT_MSG_DELRULE, netlink.Request|netlink.Acknowledge, []netlink.Attribute{
			{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")},
			{Type: unix.NFTA_RULE_CHAIN, Data: []byte(c.name + "\x00")},
		}))
	}
	for _, r := range ruleDefs(pods) {
		var list []netlink.Attribute
		for _, e := range r.exprs {
			var b []byte
			switch e := e.(type) {
			case rawExpr:
				b = e
			case expr.Any:
				var err error
				if b, err = expr.Marshal(unix.NFPROTO_INET, e); err != nil {
					return nil, fmt.Errorf("nftrules: marshal %T in %q: %w", e, r.text, err)
				}
			default:
				return nil, fmt.Errorf("nftrules: unknown expression %T in %q", e, r.text)
			}
			list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
		}
		msgs = append(msgs, nftMessage(unix.NFT_MSG_NEWRULE, netlink.Request|netlink.Acknowledge|netlink.Create|netlink.Append, []netlink.Attribute{
			{Type: unix.NFTA_RULE_TABLE, Data: []byte(TableName + "\x00")},
			{Type: unix.NFTA_RULE_CHAIN, Data: []byte(r.chain + "\x00")},
			{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: mustMarshal(list)},
		}))
	}
	return msgs, nil
}

// sendBatch sends messages as one nfnetlink transaction on a connection of its own (so that no unread
// acknowledgement can be left for a later caller) and waits for every acknowledgement.
func sendBatch(netnsFD int, msgs []netlink.Message) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return err
	}
	defer conn.Close()
	// Batch delimiters carry the subsystem in the resource id and are not acknowledged.
	delim := func(t uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(t), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	batch := append(append([]netlink.Message{delim(unix.NFNL_MSG_BATCH_BEGIN)}, msgs...), delim(unix.NFNL_MSG_BATCH_END))
	if _, err := conn.SendMessages(batch); err != nil {
		return err
	}
	for acked := 0; acked < len(msgs); {
		replies, err := conn.Receive() // an error reply comes back as an error wrapping its errno
		if err != nil {
			return err
		}
		acked += len(replies)
	}
	return nil
}
