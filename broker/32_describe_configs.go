package broker

// DescribeConfigs (key 32), v1-4.
//
// Topics: every config in the topic config table, with its value, whether
// it is the default, and its source (DYNAMIC_TOPIC_CONFIG when set on the
// topic, DEFAULT_CONFIG otherwise); synonyms (the broker default under the
// same name) and documentation when asked for. Brokers: this broker's
// settings, read-only (they come from flags). Unknown names in ConfigNames
// are left out, as Kafka does.

import (
	"context"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

func handleDescribeConfigs(b *Broker, _ context.Context, req *protocol.Request) (kmsg.Response, error) {
	r := req.Body.(*kmsg.DescribeConfigsRequest)
	resp := r.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewDescribeConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t := b.lookupTopic(rr.ResourceName)
			if t == nil {
				res.ErrorCode = kerr.UnknownTopicOrPartition.Code
				break
			}
			res.Configs = b.describeTopicConfigs(t.load().configs, rr.ConfigNames, r.IncludeSynonyms || r.Version == 0)
		case kmsg.ConfigResourceTypeBroker:
			if rr.ResourceName != "" && rr.ResourceName != strconv.Itoa(int(b.cfg.NodeID)) {
				res.ErrorCode = kerr.InvalidRequest.Code
				msg := fmt.Sprintf("this is broker %d", b.cfg.NodeID)
				res.ErrorMessage = &msg
				break
			}
			res.Configs = b.describeBrokerConfigs(rr.ConfigNames)
		default:
			res.ErrorCode = kerr.InvalidRequest.Code
			msg := fmt.Sprintf("resource type %d is not supported", rr.ResourceType)
			res.ErrorMessage = &msg
		}
		if r.IncludeDocumentation {
			for i := range res.Configs {
				if d, ok := lookupTopicConfig(res.Configs[i].Name); ok && rr.ResourceType == kmsg.ConfigResourceTypeTopic {
					doc := d.doc
					res.Configs[i].Documentation = &doc
				}
			}
		}
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}

// describeTopicConfigs renders a topic's configs from the table: every
// known config (or those named), explicit values first, defaults
// otherwise.
func (b *Broker) describeTopicConfigs(explicit map[string]string, names []string, synonyms bool) []kmsg.DescribeConfigsResponseResourceConfig {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, d := range topicConfigDefs {
		if len(want) > 0 && !want[d.name] {
			continue
		}
		c := kmsg.NewDescribeConfigsResponseResourceConfig()
		c.Name, c.ConfigType = d.name, d.configType
		def := d.def(&b.cfg)
		if v, ok := explicit[d.name]; ok {
			c.Value, c.Source = &v, kmsg.ConfigSourceDynamicTopicConfig
		} else {
			c.Value, c.Source, c.IsDefault = &def, kmsg.ConfigSourceDefaultConfig, true
		}
		if synonyms {
			if c.Source == kmsg.ConfigSourceDynamicTopicConfig {
				s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
				v := *c.Value
				s.Name, s.Value, s.Source = d.name, &v, kmsg.ConfigSourceDynamicTopicConfig
				c.ConfigSynonyms = append(c.ConfigSynonyms, s)
			}
			s := kmsg.NewDescribeConfigsResponseResourceConfigConfigSynonym()
			s.Name, s.Value, s.Source = d.name, &def, kmsg.ConfigSourceDefaultConfig
			c.ConfigSynonyms = append(c.ConfigSynonyms, s)
		}
		out = append(out, c)
	}
	return out
}

// describeBrokerConfigs renders this broker's settings, all read-only.
func (b *Broker) describeBrokerConfigs(names []string) []kmsg.DescribeConfigsResponseResourceConfig {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	c := &b.cfg
	entries := []struct {
		name  string
		value string
		typ   kmsg.ConfigType
	}{
		{"broker.id", strconv.Itoa(int(c.NodeID)), kmsg.ConfigTypeInt},
		{"node.id", strconv.Itoa(int(c.NodeID)), kmsg.ConfigTypeInt},
		{"log.dirs", c.DataDir, kmsg.ConfigTypeString},
		{"auto.create.topics.enable", strconv.FormatBool(c.AutoCreateTopics), kmsg.ConfigTypeBoolean},
		{"num.partitions", strconv.Itoa(int(c.DefaultPartitions)), kmsg.ConfigTypeInt},
		{"default.replication.factor", "1", kmsg.ConfigTypeShort},
		{"message.max.bytes", strconv.Itoa(c.TopicDefaults.MaxBatchBytes), kmsg.ConfigTypeInt},
		{"log.segment.bytes", strconv.FormatInt(c.TopicDefaults.SegmentBytes, 10), kmsg.ConfigTypeInt},
		{"log.roll.ms", msString(c.TopicDefaults.SegmentAge), kmsg.ConfigTypeLong},
		{"log.retention.ms", msString(c.TopicDefaults.RetentionAge), kmsg.ConfigTypeLong},
		{"log.retention.bytes", strconv.FormatInt(c.TopicDefaults.RetentionBytes, 10), kmsg.ConfigTypeLong},
		{"log.message.timestamp.type", c.TimestampType, kmsg.ConfigTypeString},
		{"socket.request.max.bytes", strconv.Itoa(int(c.MaxRequestBytes)), kmsg.ConfigTypeInt},
		{"fetch.max.bytes", strconv.Itoa(int(c.MaxFetchBytes)), kmsg.ConfigTypeInt},
		{"rack", c.Rack, kmsg.ConfigTypeString},
	}
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, e := range entries {
		if len(want) > 0 && !want[e.name] {
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		v := e.value
		rc.Name, rc.Value, rc.ReadOnly, rc.Source, rc.ConfigType = e.name, &v, true, kmsg.ConfigSourceStaticBrokerConfig, e.typ
		out = append(out, rc)
	}
	return out
}
