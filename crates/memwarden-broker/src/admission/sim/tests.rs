use super::*;

#[test]
fn on_the_alternating_trace_demand_swaps_a_fifth_as_often_as_lru_and_waits_no_longer() {
    let trace = traces::alternating();
    let lru = replay(&trace, Policy::Lru);
    let demand = replay(&trace, Policy::Demand);
    assert_eq!(lru.requests, demand.requests);
    assert_eq!(lru.waits_ms.len() as u64, lru.requests);
    assert_eq!(demand.waits_ms.len() as u64, demand.requests);
    assert!(demand.swaps * 5 <= lru.swaps, "{demand:?}\n{lru:?}");
    assert!(
        demand.wait_ms(0.99) <= lru.wait_ms(0.99),
        "{demand:?}\n{lru:?}"
    );
}

#[test]
fn every_request_of_every_trace_is_answered_under_every_policy() {
    for trace in traces::all() {
        let sent: usize = trace.clients.iter().map(|c| c.steps.len()).sum();
        for policy in [Policy::Lru, Policy::Recency, Policy::Demand] {
            let out = replay(&trace, policy);
            assert_eq!(out.requests, sent as u64, "{} {policy:?}", trace.name);
            assert_eq!(out.waits_ms.len() as u64 + out.refused, out.requests);
            assert_eq!(out.refused, 0, "{} {policy:?}", trace.name);
            assert!(out.loads > 0 && out.loading_ms > 0);
        }
    }
}
