#include "abi_table.h"

#include <kbp/abi.h>

#include <cstddef>

namespace kbp {

namespace {

struct Field {
  const char* name;
  size_t offset;
  size_t size;
};

struct Struct {
  const char* name;
  size_t size;
  const Field* fields;
  size_t count;
};

// Padding in abi.h is explicit, so the fields of a struct tile it exactly:
// a field added to abi.h but not here fails the build.
template <size_t N>
constexpr bool Tiles(const Field (&fields)[N], size_t size) {
  size_t end = 0;
  for (size_t i = 0; i < N; i++) {
    if (fields[i].offset != end) return false;
    end += fields[i].size;
  }
  return end == size;
}

#define KBP_FIELD(S, f) Field{#f, offsetof(S, f), sizeof(S::f)}
#define KBP_STRUCT(S, fields) Struct{#S, sizeof(S), fields, sizeof(fields) / sizeof(Field)}
#define KBP_CHECK_TILES(S, fields) \
  static_assert(Tiles(fields, sizeof(S)), #S ": the layout table does not cover every byte")

constexpr Field kSvcKey[] = {
    KBP_FIELD(kbp_svc_key, vip),  KBP_FIELD(kbp_svc_key, port), KBP_FIELD(kbp_svc_key, proto),
    KBP_FIELD(kbp_svc_key, scope), KBP_FIELD(kbp_svc_key, slot), KBP_FIELD(kbp_svc_key, pad),
};
KBP_CHECK_TILES(kbp_svc_key, kSvcKey);

constexpr Field kSvcValue[] = {
    KBP_FIELD(kbp_svc_value, backend_id), KBP_FIELD(kbp_svc_value, svc_id),
    KBP_FIELD(kbp_svc_value, count),      KBP_FIELD(kbp_svc_value, flags),
    KBP_FIELD(kbp_svc_value, affinity_timeout),
};
KBP_CHECK_TILES(kbp_svc_value, kSvcValue);

constexpr Field kBackendKey[] = {KBP_FIELD(kbp_backend_key, id)};
KBP_CHECK_TILES(kbp_backend_key, kBackendKey);

constexpr Field kBackend[] = {
    KBP_FIELD(kbp_backend, ip),
    KBP_FIELD(kbp_backend, port),
    KBP_FIELD(kbp_backend, proto),
    KBP_FIELD(kbp_backend, state),
    KBP_FIELD(kbp_backend, flags),
    KBP_FIELD(kbp_backend, pad),
};
KBP_CHECK_TILES(kbp_backend, kBackend);

constexpr Field kRevnatKey[] = {KBP_FIELD(kbp_revnat_key, svc_id)};
KBP_CHECK_TILES(kbp_revnat_key, kRevnatKey);

constexpr Field kRevnat[] = {
    KBP_FIELD(kbp_revnat, vip),
    KBP_FIELD(kbp_revnat, port),
    KBP_FIELD(kbp_revnat, pad),
};
KBP_CHECK_TILES(kbp_revnat, kRevnat);

constexpr Field kCtKey[] = {
    KBP_FIELD(kbp_ct_key, saddr), KBP_FIELD(kbp_ct_key, daddr), KBP_FIELD(kbp_ct_key, sport),
    KBP_FIELD(kbp_ct_key, dport), KBP_FIELD(kbp_ct_key, proto), KBP_FIELD(kbp_ct_key, dir),
    KBP_FIELD(kbp_ct_key, pad),
};
KBP_CHECK_TILES(kbp_ct_key, kCtKey);

constexpr Field kCtValue[] = {
    KBP_FIELD(kbp_ct_value, created_ns), KBP_FIELD(kbp_ct_value, last_seen_ns),
    KBP_FIELD(kbp_ct_value, backend_id), KBP_FIELD(kbp_ct_value, svc_id),
    KBP_FIELD(kbp_ct_value, nat_addr),   KBP_FIELD(kbp_ct_value, nat_port),
    KBP_FIELD(kbp_ct_value, flags),      KBP_FIELD(kbp_ct_value, tcp_flags),
    KBP_FIELD(kbp_ct_value, pad),        KBP_FIELD(kbp_ct_value, client_port),
    KBP_FIELD(kbp_ct_value, pad2),
};
KBP_CHECK_TILES(kbp_ct_value, kCtValue);

constexpr Field kStatValue[] = {
    KBP_FIELD(kbp_stat_value, packets),
    KBP_FIELD(kbp_stat_value, bytes),
};
KBP_CHECK_TILES(kbp_stat_value, kStatValue);

constexpr Field kAffinityKey[] = {
    KBP_FIELD(kbp_affinity_key, client),
    KBP_FIELD(kbp_affinity_key, svc_id),
};
KBP_CHECK_TILES(kbp_affinity_key, kAffinityKey);

constexpr Field kAffinityValue[] = {
    KBP_FIELD(kbp_affinity_value, last_used_ns),
    KBP_FIELD(kbp_affinity_value, backend_id),
    KBP_FIELD(kbp_affinity_value, slot),
    KBP_FIELD(kbp_affinity_value, pad),
};
KBP_CHECK_TILES(kbp_affinity_value, kAffinityValue);

constexpr Field kSnatKey[] = {
    KBP_FIELD(kbp_snat_key, saddr), KBP_FIELD(kbp_snat_key, daddr), KBP_FIELD(kbp_snat_key, sport),
    KBP_FIELD(kbp_snat_key, dport), KBP_FIELD(kbp_snat_key, proto), KBP_FIELD(kbp_snat_key, pad),
};
KBP_CHECK_TILES(kbp_snat_key, kSnatKey);

constexpr Field kSnatValue[] = {
    KBP_FIELD(kbp_snat_value, created_ns), KBP_FIELD(kbp_snat_value, client_addr),
    KBP_FIELD(kbp_snat_value, client_port), KBP_FIELD(kbp_snat_value, pad),
    KBP_FIELD(kbp_snat_value, svc_id),     KBP_FIELD(kbp_snat_value, pad2),
};
KBP_CHECK_TILES(kbp_snat_value, kSnatValue);

constexpr Field kConfig[] = {
    KBP_FIELD(kbp_config, node_ip),
    KBP_FIELD(kbp_config, flags),
};
KBP_CHECK_TILES(kbp_config, kConfig);

constexpr Field kSrcRangeKey[] = {
    KBP_FIELD(kbp_src_range_key, prefixlen),
    KBP_FIELD(kbp_src_range_key, svc_id),
    KBP_FIELD(kbp_src_range_key, addr),
};
KBP_CHECK_TILES(kbp_src_range_key, kSrcRangeKey);

constexpr Field kSrcRange[] = {KBP_FIELD(kbp_src_range, flags)};
KBP_CHECK_TILES(kbp_src_range, kSrcRange);

constexpr Field kHostNs[] = {
    KBP_FIELD(kbp_host_ns, netns_cookie),
    KBP_FIELD(kbp_host_ns, flags),
    KBP_FIELD(kbp_host_ns, pad),
};
KBP_CHECK_TILES(kbp_host_ns, kHostNs);

constexpr Field kSockRevKey[] = {
    KBP_FIELD(kbp_sock_rev_key, cookie), KBP_FIELD(kbp_sock_rev_key, addr), KBP_FIELD(kbp_sock_rev_key, port),
    KBP_FIELD(kbp_sock_rev_key, proto),  KBP_FIELD(kbp_sock_rev_key, pad),
};
KBP_CHECK_TILES(kbp_sock_rev_key, kSockRevKey);

constexpr Field kSockRev[] = {
    KBP_FIELD(kbp_sock_rev, vip),
    KBP_FIELD(kbp_sock_rev, port),
    KBP_FIELD(kbp_sock_rev, pad),
    KBP_FIELD(kbp_sock_rev, svc_id),
};
KBP_CHECK_TILES(kbp_sock_rev, kSockRev);

constexpr Struct kStructs[] = {
    KBP_STRUCT(kbp_svc_key, kSvcKey),         KBP_STRUCT(kbp_svc_value, kSvcValue),
    KBP_STRUCT(kbp_backend_key, kBackendKey), KBP_STRUCT(kbp_backend, kBackend),
    KBP_STRUCT(kbp_revnat_key, kRevnatKey),   KBP_STRUCT(kbp_revnat, kRevnat),
    KBP_STRUCT(kbp_ct_key, kCtKey),           KBP_STRUCT(kbp_ct_value, kCtValue),
    KBP_STRUCT(kbp_stat_value, kStatValue),   KBP_STRUCT(kbp_affinity_key, kAffinityKey),
    KBP_STRUCT(kbp_affinity_value, kAffinityValue), KBP_STRUCT(kbp_snat_key, kSnatKey),
    KBP_STRUCT(kbp_snat_value, kSnatValue),         KBP_STRUCT(kbp_config, kConfig),
    KBP_STRUCT(kbp_src_range_key, kSrcRangeKey),    KBP_STRUCT(kbp_src_range, kSrcRange),
    KBP_STRUCT(kbp_host_ns, kHostNs),               KBP_STRUCT(kbp_sock_rev_key, kSockRevKey),
    KBP_STRUCT(kbp_sock_rev, kSockRev),
};

#undef KBP_FIELD
#undef KBP_STRUCT
#undef KBP_CHECK_TILES

}  // namespace

Napi::Value Layout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object layout = Napi::Object::New(env);
  for (const Struct& s : kStructs) {
    Napi::Object fields = Napi::Object::New(env);
    for (size_t i = 0; i < s.count; i++) {
      Napi::Object field = Napi::Object::New(env);
      field.Set("offset", Napi::Number::New(env, static_cast<double>(s.fields[i].offset)));
      field.Set("size", Napi::Number::New(env, static_cast<double>(s.fields[i].size)));
      fields.Set(s.fields[i].name, field);
    }
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("size", Napi::Number::New(env, static_cast<double>(s.size)));
    entry.Set("fields", fields);
    layout.Set(s.name, entry);
  }
  return layout;
}

Napi::Value Constants(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object c = Napi::Object::New(env);
#define KBP_NUM(name) c.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
#define KBP_STR(name) c.Set(#name, Napi::String::New(env, name))
  KBP_NUM(KBP_ABI_VERSION);

  KBP_STR(KBP_MAP_SERVICES);
  KBP_STR(KBP_MAP_BACKENDS);
  KBP_STR(KBP_MAP_REVNAT);
  KBP_STR(KBP_MAP_CT);
  KBP_STR(KBP_MAP_STATS);
  KBP_STR(KBP_MAP_AFFINITY);
  KBP_STR(KBP_MAP_SNAT);
  KBP_STR(KBP_MAP_CONFIG);
  KBP_STR(KBP_MAP_SRC_RANGES);
  KBP_STR(KBP_MAP_SOCK_REVNAT);
  KBP_STR(KBP_MAP_HOST_NS);

  KBP_NUM(KBP_SERVICES_MAX);
  KBP_NUM(KBP_BACKENDS_MAX);
  KBP_NUM(KBP_REVNAT_MAX);
  KBP_NUM(KBP_CT_MAX);
  KBP_NUM(KBP_AFFINITY_MAX);
  KBP_NUM(KBP_SNAT_MAX);
  KBP_NUM(KBP_SRC_RANGES_MAX);
  KBP_NUM(KBP_SOCK_REVNAT_MAX);

  KBP_NUM(KBP_TC_HANDLE);
  KBP_NUM(KBP_TC_PRIORITY);
  KBP_NUM(KBP_CONFIG_F_XDP_TX);

  KBP_NUM(KBP_SCOPE_EXTERNAL);
  KBP_NUM(KBP_SCOPE_INTERNAL);

  KBP_NUM(KBP_SVC_F_CLUSTER_IP);
  KBP_NUM(KBP_SVC_F_NODE_PORT);
  KBP_NUM(KBP_SVC_F_EXTERNAL_IP);
  KBP_NUM(KBP_SVC_F_LOAD_BALANCER);
  KBP_NUM(KBP_SVC_F_AFFINITY);
  KBP_NUM(KBP_SVC_F_VIP_MARKER);
  KBP_NUM(KBP_SVC_F_REJECT);
  KBP_NUM(KBP_SVC_F_SOURCE_RANGES);
  KBP_NUM(KBP_SVC_F_MASQUERADE);
  KBP_NUM(KBP_SVC_F_INTERNAL_SCOPE);

  KBP_NUM(KBP_BACKEND_ACTIVE);
  KBP_NUM(KBP_BACKEND_TERMINATING);
  KBP_NUM(KBP_BACKEND_F_LOCAL);

  KBP_NUM(KBP_CT_FORWARD);
  KBP_NUM(KBP_CT_REPLY);
  KBP_NUM(KBP_CT_F_SEEN_REPLY);
  KBP_NUM(KBP_CT_F_CLOSING);
  KBP_NUM(KBP_CT_F_SNAT);
  KBP_NUM(KBP_CT_F_HAIRPIN);
  KBP_NUM(KBP_CT_F_PORT_REMAP);
  KBP_NUM(KBP_HAIRPIN_ADDR);
  KBP_NUM(KBP_CT_REFRESH_NS);
  KBP_NUM(KBP_CT_LIFETIME_TCP_NS);
  KBP_NUM(KBP_CT_LIFETIME_CLOSING_NS);
  KBP_NUM(KBP_CT_LIFETIME_OTHER_NS);

  KBP_NUM(KBP_STAT_NEW_FLOW);
  KBP_NUM(KBP_STAT_ESTABLISHED);
  KBP_NUM(KBP_STAT_REVNAT);
  KBP_NUM(KBP_STAT_PASS);
  KBP_NUM(KBP_STAT_DROP_NO_BACKEND);
  KBP_NUM(KBP_STAT_DROP_UNKNOWN_PORT);
  KBP_NUM(KBP_STAT_DROP_CT_INSERT);
  KBP_NUM(KBP_STAT_DROP_BACKEND_MISSING);
  KBP_NUM(KBP_STAT_DROP_REWRITE);
  KBP_NUM(KBP_STAT_DROP_FRAGMENT);
  KBP_NUM(KBP_STAT_DROP_MALFORMED);
  KBP_NUM(KBP_STAT_SNAT);
  KBP_NUM(KBP_STAT_DROP_SNAT_PORTS);
  KBP_NUM(KBP_STAT_DROP_NO_CONFIG);
  KBP_NUM(KBP_STAT_DROP_CT_CLASH);
  KBP_NUM(KBP_STAT_REJECT);
  KBP_NUM(KBP_STAT_ICMP_REVNAT);
  KBP_NUM(KBP_STAT_HAIRPIN);
  KBP_NUM(KBP_STAT_DROP_SOURCE_RANGE);
  KBP_NUM(KBP_STAT_XDP_FORWARD);
  KBP_NUM(KBP_STAT_SOCK_XLATE);
  KBP_NUM(KBP_STAT_SOCK_REJECT);
  KBP_NUM(KBP_STAT_XDP_TX);
  KBP_NUM(KBP_STAT_PORT_REMAP);
  KBP_NUM(KBP_STAT_MAX);
  KBP_NUM(KBP_STAT_SLOTS);

  KBP_NUM(KBP_SNAT_PORT_MIN);
  KBP_NUM(KBP_SNAT_PORT_MAX);
  KBP_NUM(KBP_SNAT_TRIES);
#undef KBP_NUM
#undef KBP_STR
  return c;
}

}  // namespace kbp
