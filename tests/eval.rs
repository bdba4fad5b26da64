//! `setdino eval`: every metric against hand-computed values on small inputs (evaluation.md), the input
//! formats and their errors, and an end-to-end CLI run on a tiny generated table. The 30 k-profile scale
//! run is `#[ignore]`d: `cargo test --release --test eval -- --ignored --nocapture`.
use setdino::eval::complexes::{self, Format};
use setdino::eval::io::{self, CellTable, Features};
use setdino::eval::knn::{self, Neighbors};
use setdino::eval::map::{self, Rel};
use setdino::eval::normalize::{self, Method, Pca};
use setdino::eval::profiles::{self, Level};
use setdino::eval::{graph, recall, Log, NodeLabels};
use std::path::Path;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// ---------------------------------------------------------------- kNN and votes

#[test]
fn vote_majority_wins() {
    assert_eq!(
        knn::vote(&[1, 2, 2, 3, 4], &[0.9, 0.8, 0.7, 0.6, 0.5]),
        Some(2)
    );
}

#[test]
fn vote_tie_goes_to_larger_summed_similarity() {
    // Labels 1 and 2 both have two votes; sums 0.9 + 0.5 = 1.4 < 0.8 + 0.7 = 1.5.
    assert_eq!(
        knn::vote(&[1, 2, 2, 1, 3], &[0.9, 0.8, 0.7, 0.5, 0.4]),
        Some(2)
    );
}

#[test]
fn vote_exact_tie_goes_to_the_nearest_neighbour_label() {
    // Equal counts and exactly equal sums (0.5 + 0.25 for both): the label met first wins.
    assert_eq!(
        knn::vote(&[1, 2, 1, 2, 3], &[0.5, 0.5, 0.25, 0.25, 0.125]),
        Some(1)
    );
    assert_eq!(
        knn::vote(&[2, 1, 2, 1, 3], &[0.5, 0.5, 0.25, 0.25, 0.125]),
        Some(2)
    );
    assert_eq!(knn::vote(&[], &[]), None);
}

#[test]
fn top_k_excludes_self_and_breaks_last_place_ties_by_lower_index() {
    //          me   1    2    3    4    5    6
    let s = [1.0, 0.5, 0.9, 0.5, 0.8, 0.7, 0.5];
    let t = knn::top_k(&s, 0, 5);
    let idx: Vec<u32> = t.iter().map(|p| p.0).collect();
    assert_eq!(idx, vec![2, 4, 5, 1, 3]);
    // A tie spanning the last place keeps the lower indices, whatever the scan order.
    let s = [0.3, 0.3, 0.3, 1.0, 0.3];
    let idx: Vec<u32> = knn::top_k(&s, 3, 2).iter().map(|p| p.0).collect();
    assert_eq!(idx, vec![0, 1]);
    // Fewer candidates than k.
    assert_eq!(knn::top_k(&[1.0, 0.2], 0, 5).len(), 1);
}

#[test]
fn knn_accuracy_counts_only_queries() {
    let nb = Neighbors {
        k: 2,
        lists: vec![
            vec![(1, 0.9), (2, 0.1)],
            vec![(0, 0.9), (2, 0.2)],
            vec![(1, 0.2), (0, 0.1)],
        ],
    };
    // Labels: 0 → 7 (neighbours 7, 8: tie 1–1, sum 0.9 > 0.1 → 7 ✓), 1 → 7 (7, 8 → 7 ✓), 2 → 8 (7, 7 ✗).
    let (acc, hits) = knn::knn_accuracy(&nb, &[7, 7, 8], &[true, true, true]);
    assert!(close(acc, 2.0 / 3.0));
    assert_eq!(hits, vec![Some(true), Some(true), Some(false)]);
    let (acc, hits) = knn::knn_accuracy(&nb, &[7, 7, 8], &[false, false, true]);
    assert_eq!(acc, 0.0);
    assert_eq!(hits[0], None);
}

#[test]
fn cosine_is_zero_for_a_null_vector() {
    assert_eq!(knn::cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    assert!(close(knn::cosine(&[1.0, 0.0], &[1.0, 1.0]), 0.5f64.sqrt()));
    let z = knn::unit_rows(&[0.0, 1e-13, 3.0, 4.0], 2, 2);
    assert_eq!(&z[..2], &[0.0, 0.0]);
    assert!(close(z[2], 0.6) && close(z[3], 0.8));
}

#[test]
fn blocked_similarities_equal_direct_dot_products() {
    // 5 rows, more than one block would need n ≥ 2^23 / block; here check map_rows against cosine.
    let x: Vec<f32> = (0..15).map(|v| ((v * 7 % 11) as f32) - 5.0).collect();
    let z = knn::unit_rows(&x, 5, 3);
    let rows = knn::map_rows(&z, 5, &z, 5, 3, |_, s| s.to_vec(), &|_, _| {});
    for i in 0..5 {
        for j in 0..5 {
            let a: Vec<f64> = x[i * 3..i * 3 + 3].iter().map(|&v| v as f64).collect();
            let b: Vec<f64> = x[j * 3..j * 3 + 3].iter().map(|&v| v as f64).collect();
            assert!((rows[i][j] - knn::cosine(&a, &b)).abs() < 1e-12);
        }
    }
}

// ---------------------------------------------------------------- graph connectivity

#[test]
fn graph_connectivity_by_hand() {
    // Batches [0 0 0 1 1 1]; same-batch undirected edges: 0–1, 3–4; the rest cross batches.
    let mut nb = Neighbors {
        k: 1,
        lists: vec![
            vec![(1, 1.0)],
            vec![(0, 1.0)],
            vec![(3, 1.0)],
            vec![(4, 1.0)],
            vec![(2, 1.0)],
            vec![(0, 1.0)],
        ],
    };
    let batch = [0, 0, 0, 1, 1, 1];
    let (gc, per) = graph::graph_connectivity(&nb, &batch, 2);
    assert!(close(per[0], 2.0 / 3.0) && close(per[1], 2.0 / 3.0));
    assert!(close(gc, 2.0 / 3.0));
    // One directed edge 5 → 3 joins node 5 (the graph is made undirected): batch 1 is one component.
    nb.lists[5] = vec![(3, 1.0)];
    let (gc, _) = graph::graph_connectivity(&nb, &batch, 2);
    assert!(close(gc, (2.0 / 3.0 + 1.0) / 2.0));
}

// ---------------------------------------------------------------- mAP

#[test]
fn average_precision_by_hand() {
    // Ranking: neg .95, pos .9, neg .7, pos .5 (the .99 candidate is left out) → (1/2 + 2/4) / 2.
    let s = [1.0, 0.9, 0.95, 0.5, 0.7, 0.99];
    let rel = [Rel::Skip, Rel::Pos, Rel::Neg, Rel::Pos, Rel::Neg, Rel::Skip];
    assert!(close(map::average_precision(&s, |j| rel[j]).unwrap(), 0.5));
}

#[test]
fn average_precision_ranks_positives_first_among_equal_similarities() {
    // pos .8 and neg .8 tie: pos first → precisions 1 and 2/3.
    let s = [0.8, 0.8, 0.3];
    let rel = [Rel::Pos, Rel::Neg, Rel::Pos];
    assert!(close(
        map::average_precision(&s, |j| rel[j]).unwrap(),
        (1.0 + 2.0 / 3.0) / 2.0
    ));
}

#[test]
fn queries_without_positives_have_no_ap() {
    let s = [0.8, 0.8, 0.3];
    assert_eq!(map::average_precision(&s, |_| Rel::Neg), None);
    let (m, per) = map::mean_ap(&[Some(0.5), None, Some(1.0)], &[0, 1, 0], 2);
    assert!(close(m, 0.75));
    assert!(close(per[0].0, 0.75) && per[0].1 == 2);
    assert!(per[1].0.is_nan() && per[1].1 == 0);
}

#[test]
fn relation_rules_at_gene_and_sgrna_level() {
    // Nodes: 0 (g0 s0 b0), 1 (g0 s0 b1), 2 (g0 s1 b1), 3 (g1 s2 b0), 4 (g0 s0 b0, same gene same batch).
    let gene = [0, 0, 0, 1, 0];
    let sg = [0, 0, 1, 2, 0];
    let batch = [0, 1, 1, 0, 0];
    let r = |pk: &[u32], j| map::relation(pk, &gene, &batch, 0, j);
    assert_eq!(r(&gene, 0), Rel::Skip);
    assert_eq!(r(&gene, 1), Rel::Pos);
    assert_eq!(r(&gene, 2), Rel::Pos);
    assert_eq!(r(&gene, 3), Rel::Neg);
    assert_eq!(r(&gene, 4), Rel::Skip);
    // sgRNA level: another sgRNA of the same gene is left out.
    assert_eq!(r(&sg, 1), Rel::Pos);
    assert_eq!(r(&sg, 2), Rel::Skip);
    assert_eq!(r(&sg, 3), Rel::Neg);
}

fn labels(batch: Vec<u32>, gene: Vec<u32>, nb: usize) -> NodeLabels {
    let q = vec![true; batch.len()];
    NodeLabels {
        batch,
        n_batches: nb,
        pos_key: gene.clone(),
        neg_key: gene,
        query: q,
    }
}

#[test]
fn node_metrics_by_hand() {
    // A0 = (1,0), A1 = (0,1), B0 = (1,1), B1 = (−1,1). Cosines: A0·A1 = 0, A0·B0 = .71, A0·B1 = −.71,
    // A1·B0 = A1·B1 = .71, B0·B1 = 0. APs: A0 1/2, A1 1/3, B0 1/3, B1 1/2 → mAP 5/12. With 4 nodes
    // every node sees the other 3, own gene and own batch get 1 vote of 3: both KNN accuracies are 0;
    // every batch is one component: GC = 1.
    let x = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 1.0f32];
    let lab = labels(vec![0, 1, 0, 1], vec![0, 0, 1, 1], 2);
    let m = setdino::eval::node_metrics(&x, 4, 2, &lab, &Log::new(false));
    assert!(close(m.repro_map, 5.0 / 12.0), "{}", m.repro_map);
    let ap: Vec<f64> = m.ap.iter().map(|a| a.unwrap()).collect();
    assert!(
        close(ap[0], 0.5)
            && close(ap[1], 1.0 / 3.0)
            && close(ap[2], 1.0 / 3.0)
            && close(ap[3], 0.5)
    );
    assert_eq!(m.batch_knn5, 0.0);
    assert_eq!(m.repro_knn5, 0.0);
    assert_eq!(m.batch_gc5, 1.0);
}

#[test]
fn node_metrics_knn_with_clusters() {
    // Two tight clusters of 6 in 2-D, one per gene (three batches each). With k = 5 every node's
    // neighbours are the other 5 of its cluster: repro KNN = 1. Batch labels within a cluster: each
    // batch holds 2 nodes, so a node sees 1 own-batch vote against 2 + 2 → batch KNN = 0.
    let mut x = Vec::new();
    for c in 0..2 {
        for i in 0..6 {
            let a = c as f32 * 3.0 + i as f32 * 0.01;
            x.extend_from_slice(&[a.cos(), a.sin()]);
        }
    }
    let batch: Vec<u32> = (0..12).map(|i| (i % 3) as u32).collect();
    let gene: Vec<u32> = (0..12).map(|i| (i / 6) as u32).collect();
    let m = setdino::eval::node_metrics(&x, 12, 2, &labels(batch, gene, 3), &Log::new(false));
    assert_eq!(m.repro_knn5, 1.0);
    assert_eq!(m.batch_knn5, 0.0);
    // Every query's 4 positives (same gene, other batches) outrank the negatives: AP = 1.
    assert!(close(m.repro_map, 1.0));
}

#[test]
fn single_batch_has_no_reproducibility_queries() {
    let x = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0f32];
    let m = setdino::eval::node_metrics(
        &x,
        3,
        2,
        &labels(vec![0, 0, 0], vec![0, 1, 2], 1),
        &Log::new(false),
    );
    assert_eq!(m.batch_knn5, 1.0);
    assert_eq!(m.batch_gc5, 1.0);
    assert!(m.repro_map.is_nan());
    assert!(m.ap.iter().all(|a| a.is_none()));
}

#[test]
fn ntc_nodes_are_negatives_but_never_queries() {
    // Gene A in batches 0 and 1, an NTC node in batch 0 that is more similar to A0 than A1 is.
    let x = [1.0, 0.0, 0.0, 1.0, 1.0, 0.1f32];
    let lab = NodeLabels {
        batch: vec![0, 1, 0],
        n_batches: 2,
        pos_key: vec![0, 0, setdino::eval::NTC_LABEL],
        neg_key: vec![0, 0, setdino::eval::NTC_LABEL],
        query: vec![true, true, false],
    };
    let m = setdino::eval::node_metrics(&x, 3, 2, &lab, &Log::new(false));
    assert_eq!(m.ap[2], None);
    // A0: NTC (.995) ranks above A1 (0) → AP 1/2; A1: A0 (0) vs NTC (.0995) → AP 1/2.
    assert!(close(m.ap[0].unwrap(), 0.5) && close(m.ap[1].unwrap(), 0.5));
}

// ---------------------------------------------------------------- normalisation, PCA, profiles

#[test]
fn zscore_and_robust_statistics_by_hand() {
    // zscore: NTC values 1, 3 → mean 2, population std 1.
    let (l, s) = normalize::batch_stats(&[1.0, 3.0], 2, 1, Method::Zscore);
    assert!(close(l[0], 2.0) && close(s[0], 1.0 + 1e-6));
    // robust: 1, 2, 4, 10 → median 3, |dev| 2, 1, 1, 7 → MAD 1.5.
    let (l, s) = normalize::batch_stats(&[1.0, 2.0, 4.0, 10.0], 4, 1, Method::Robust);
    assert!(close(l[0], 3.0) && close(s[0], 1.4826 * 1.5 + 1e-18));
    let (l, s) = normalize::batch_stats(&[1.0, 3.0], 2, 1, Method::Center);
    assert!(close(l[0], 2.0) && s[0] == 1.0);
}

#[test]
fn pca_component_count_at_the_exact_095_boundary() {
    // Points (5,0) (−3,0) (−2,0) (0,1) (0,−1): mean 0, covariance diag(38/4, 2/4) = (9.5, 0.5), exact.
    // The first ratio is 9.5/10 = 0.95 exactly: "strictly greater than 0.95" needs the second component.
    let x = [5.0, 0.0, -3.0, 0.0, -2.0, 0.0, 0.0, 1.0, 0.0, -1.0];
    let p = Pca::fit(&x, 5, 2, 0.95);
    assert_eq!(p.ratio[0], 0.95);
    assert_eq!(p.k, 2);
    assert_eq!(Pca::fit(&x, 5, 2, 0.9499).k, 1);
    assert_eq!(normalize::n_components(&[0.95, 0.05], 0.95), 2);
    assert_eq!(normalize::n_components(&[0.6, 0.3, 0.1], 0.95), 3);
    assert_eq!(normalize::n_components(&[0.6, 0.3, 0.1], 0.5), 1);
    // Components are sign-fixed (largest |entry| positive) and the projection is (x − mean)·Cᵀ.
    assert_eq!(p.components[0].abs(), 1.0);
    assert!(p.components[0] > 0.0 && p.components[3] > 0.0);
    let mut o = [0.0; 2];
    p.project(&[5.0, 0.0], &mut o);
    assert!(close(o[0], 5.0) && close(o[1], 0.0));
}

/// Cells: batch b0 NTC (0,0) (2,2); A (3,1) (5,3); batch b1 NTC (−1,−1); A (1,1); B (4,0) (sgRNAs B_1, B_2).
fn tiny_cells() -> (Features, CellTable) {
    let rows: [(&str, &str, &str, bool, [f32; 2]); 8] = [
        ("b0", "NTC", "ntc_1", true, [0.0, 0.0]),
        ("b0", "A", "A_1", false, [3.0, 1.0]),
        ("b0", "NTC", "ntc_2", true, [2.0, 2.0]),
        ("b0", "A", "A_2", false, [5.0, 3.0]),
        ("b1", "A", "A_1", false, [1.0, 1.0]),
        ("b1", "NTC", "ntc_1", true, [-1.0, -1.0]),
        ("b1", "B", "B_1", false, [4.0, 0.0]),
        ("b1", "B", "B_2", false, [6.0, 2.0]),
    ];
    let mut t = CellTable::default();
    let mut x = Vec::new();
    for (b, g, s, n, v) in rows {
        t.push(b, g, s, n);
        x.extend_from_slice(&v);
    }
    (Features::from_vec(x, 8, 2), t)
}

#[test]
fn robust_drops_features_with_zero_ntc_mad() {
    // Feature 1 is constant over batch b0's NTC cells (MAD 0): RobustMAD would scale it by 1e18.
    let mut t = CellTable::default();
    let mut x = Vec::new();
    for (b, n, v) in [
        ("b0", true, [0.0f32, 1.0]),
        ("b0", true, [2.0, 1.0]),
        ("b0", true, [4.0, 1.0]),
        ("b0", false, [7.0, 5.0]),
        ("b1", true, [1.0, 0.0]),
        ("b1", true, [3.0, 2.0]),
        ("b1", false, [8.0, 9.0]),
    ] {
        t.push(b, if n { "NTC" } else { "A" }, "s", n);
        x.extend_from_slice(&v);
    }
    let f = Features::from_vec(x, 7, 2);
    let norm = normalize::fit(&f, &t, Method::Robust, None, &|_| {}).unwrap();
    let mut row = [7.0, 5.0];
    norm.affine(0, &mut row);
    assert_eq!(row[1], 0.0, "the zero-MAD feature no longer contributes");
    assert!(
        close(row[0], (7.0 - 2.0) / (1.4826 * 2.0 + 1e-18)),
        "the other feature is RobustMAD-scaled"
    );
    let mut row = [8.0, 9.0];
    norm.affine(1, &mut row);
    assert_eq!(row[1], 0.0, "dropped in every batch");
}

#[test]
fn profiles_and_consensus_by_hand() {
    let (f, t) = tiny_cells();
    let norm = normalize::fit(&f, &t, Method::None, None, &|_| {}).unwrap();
    let p = profiles::build(&f, &t, &norm, Level::Gene, false).unwrap();
    // Nodes in order of first appearance: A@b0, A@b1, B@b1.
    assert_eq!(p.nodes.n, 3);
    assert_eq!(p.nodes.x, vec![4.0, 2.0, 1.0, 1.0, 5.0, 1.0]);
    assert_eq!(p.nodes.n_cells, vec![2, 1, 2]);
    assert_eq!(p.ntc_mean, vec![1.0, 1.0, -1.0, -1.0]);
    // C[A] = mean((4,2) − (1,1), (1,1) − (−1,−1)) = (2.5, 1.5); C[B] = (5,1) − (−1,−1) = (6, 2).
    assert_eq!(p.consensus.x, vec![2.5, 1.5, 6.0, 2.0]);
    assert_eq!(p.consensus.n_batches, vec![2, 1]);
    // --include-ntc adds (NTC sgRNA, batch) nodes: ntc_1@b0, ntc_2@b0, ntc_1@b1.
    let p = profiles::build(&f, &t, &norm, Level::Gene, true).unwrap();
    assert_eq!(p.nodes.n, 6);
    assert_eq!(p.nodes.is_ntc.iter().filter(|&&v| v).count(), 3);
    assert_eq!(p.consensus.x, vec![2.5, 1.5, 6.0, 2.0]);
    // --level sgrna: A_1@b0, A_2@b0, A_1@b1, B_1@b1, B_2@b1; consensus stays gene-level.
    let p = profiles::build(&f, &t, &norm, Level::Sgrna, false).unwrap();
    assert_eq!(p.nodes.n, 5);
    assert_eq!(p.nodes.x[..4], [3.0, 1.0, 5.0, 3.0]);
    assert_eq!(p.consensus.x, vec![2.5, 1.5, 6.0, 2.0]);
}

#[test]
fn zscore_profiles_are_relative_to_each_batch_ntc() {
    let (f, t) = tiny_cells();
    // b1 has a single NTC cell: std 0 → scale 1e-6; check b0 only: NTC mean (1,1), std (1,1).
    let norm = normalize::fit(&f, &t, Method::Zscore, None, &|_| {}).unwrap();
    let p = profiles::build(&f, &t, &norm, Level::Gene, false).unwrap();
    let s = 1.0 + 1e-6;
    assert!(
        (p.nodes.x[0] as f64 - 3.0 / s).abs() < 1e-6
            && (p.nodes.x[1] as f64 - 1.0 / s).abs() < 1e-6
    );
    assert!(p.ntc_mean[0].abs() < 1e-6);
}

#[test]
fn a_batch_without_ntc_is_an_error_for_ntc_normalisation() {
    let mut t = CellTable::default();
    t.push("b0", "A", "A_1", false);
    t.push("b0", "NTC", "n", true);
    t.push("b1", "A", "A_1", false);
    let f = Features::from_vec(vec![1.0, 2.0, 3.0], 3, 1);
    let e = normalize::fit(&f, &t, Method::Zscore, None, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch `b1` has no NTC cell"), "{e}");
    assert!(normalize::fit(&f, &t, Method::None, None, &|_| {}).is_ok());
}

// ---------------------------------------------------------------- complexes

#[test]
fn corum_format_with_duplicates_and_self_pairs() {
    let text = "ComplexID\tComplexName\tOrganism\tsubunits(Gene name)\n\
                1\tC1\tHuman\tA;B;C\n\
                2\tC2\tHuman\tB;A;A\n";
    let c = complexes::parse(text, Path::new("corum.txt")).unwrap();
    assert_eq!(c.format, Format::Corum);
    assert_eq!(c.complexes.len(), 2);
    assert_eq!(c.complexes[0].0, "C1");
    let want: Vec<(String, String)> = vec![("A", "B"), ("A", "C"), ("B", "C")]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    assert_eq!(c.pairs.into_iter().collect::<Vec<_>>(), want);
}

#[test]
fn clusters_format() {
    let c = complexes::parse("c1\tA B C\nc2\tC D\n", Path::new("c.tsv")).unwrap();
    assert_eq!(c.format, Format::Clusters);
    assert_eq!(c.pairs.len(), 4);
    assert!(c.pairs.contains(&complexes::pair_key("D", "C")));
}

#[test]
fn pairs_format_counts_each_unordered_pair_once() {
    let c = complexes::parse("entity1,entity2\nA,B\nB,A\nC,C\nA,B\n", Path::new("p.csv")).unwrap();
    assert_eq!(c.format, Format::Pairs);
    assert_eq!(c.pairs.len(), 1);
}

#[test]
fn unknown_complexes_format_is_a_clear_error() {
    let e = complexes::parse("just some words\nmore\n", Path::new("x.txt"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.txt") && e.contains("unknown complexes format"),
        "{e}"
    );
    let e = complexes::parse("c1\tA B\nc2\tA\tB\n", Path::new("y.tsv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("y.tsv: line 2"), "{e}");
}

#[test]
fn genes_missing_from_either_side_are_left_out_of_the_queries() {
    // Profiled genes A B C D at angles 0°, 10°, 90°, 180°. Pairs: A–B (profiled), A–E (E not profiled),
    // and D is in no complex. Null = 6 pairs; the only query is A–B, the most similar pair.
    let deg = |d: f32| [d.to_radians().cos(), d.to_radians().sin()];
    let x: Vec<f32> = [0.0, 10.0, 90.0, 180.0]
        .iter()
        .flat_map(|&d| deg(d))
        .collect();
    let cx = complexes::parse("entity1,entity2\nA,B\nA,E\n", Path::new("p.csv")).unwrap();
    let cm =
        setdino::eval::consensus_metrics(&x, 4, 2, &["A", "B", "C", "D"], &cx, &Log::new(false));
    assert_eq!(cm.pairs, vec![(0, 1)]);
    assert_eq!(cm.recall.n_null, 6);
    assert_eq!(cm.recall.n_query, 1);
    // below(q) = 5 of 6 ≥ 0.95? 0.833 no; ≥ 0.9? no. Two-tailed neither. pr_auc: rank 1 → 1. KS: the
    // query is the maximum: F_q jumps to 1 at the top, F_null is 5/6 just below → D = 5/6.
    assert_eq!(cm.recall.recall_top5, 0.0);
    assert_eq!(cm.recall.recall_top10, 0.0);
    assert!(close(cm.recall.pr_auc, 1.0));
    assert!(close(cm.recall.ks, 5.0 / 6.0));
}

// ---------------------------------------------------------------- recall, PR, KS

fn hundredths(v: &[u32]) -> Vec<f64> {
    v.iter().map(|&k| k as f64 / 100.0).collect()
}

#[test]
fn recall_one_tailed_uses_strictly_below_and_greater_or_equal() {
    // Null 0.01 … 0.20 (20 values). q = 0.20: 19 below → 0.95 ≥ 0.95: in the top 5 %.
    let null = hundredths(&(1..=20).collect::<Vec<_>>());
    assert!(recall::in_top(&null, 0.20, 0.95));
    assert!(!recall::in_top(&null, 0.19, 0.95));
    assert!(recall::in_top(&null, 0.19, 0.9));
    // Two equal maxima: q = 0.20 has 18 values strictly below → 0.9, not top 5 %, but top 10 %.
    let mut tied = hundredths(&(1..=18).collect::<Vec<_>>());
    tied.extend([0.2, 0.2]);
    assert!(!recall::in_top(&tied, 0.2, 0.95));
    assert!(recall::in_top(&tied, 0.2, 0.9));
    assert!(close(
        recall::recall_one_tailed(&tied, &[0.2, 0.2, 0.01, 0.18], 0.9),
        0.5
    ));
}

#[test]
fn recall_two_tailed_counts_the_bottom_with_at_most() {
    let null = hundredths(&(1..=20).collect::<Vec<_>>());
    // q = 0.01: ≤ count 1 → 0.05 ≤ 0.05: counted at 5 %; q = 0.02: 0.1 > 0.05 but ≤ 0.1.
    assert!(close(
        recall::recall_two_tailed(&null, &[0.01, 0.02, 0.10, 0.20], 0.05, 0.95),
        0.5
    ));
    assert!(close(
        recall::recall_two_tailed(&null, &[0.01, 0.02, 0.10, 0.20], 0.1, 0.9),
        0.75
    ));
    // One-tailed ignores the bottom.
    assert!(close(
        recall::recall_one_tailed(&null, &[0.01, 0.02, 0.10, 0.20], 0.95),
        0.25
    ));
}

#[test]
fn pr_auc_groups_equal_similarities() {
    // Null .1 .5 .5 .9, positives .5 and .9: thresholds .9 (P 1, R .5), .5 (P 2/3, R 1) → 1/2 + 1/3.
    // (Ranking the tied positive first would give 1.0; sklearn gives 0.8333.)
    let ap = recall::average_precision(&[0.1, 0.5, 0.5, 0.9], &[0.5, 0.9]);
    assert!(close(ap, 5.0 / 6.0), "{ap}");
    assert!(close(
        recall::average_precision(&[0.1, 0.2, 0.3], &[0.3]),
        1.0
    ));
    assert!(close(
        recall::average_precision(&[0.1, 0.2, 0.3], &[0.1]),
        1.0 / 3.0
    ));
}

#[test]
fn ks_statistic_known_cases() {
    assert_eq!(
        recall::ks_statistic(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]),
        1.0
    );
    assert_eq!(
        recall::ks_statistic(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]),
        0.5
    );
    assert_eq!(recall::ks_statistic(&[1.0, 2.0], &[2.0, 3.0]), 0.5);
    assert_eq!(recall::ks_statistic(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
}

#[test]
fn pr_curve_by_hand_and_consistent_with_recall() {
    let null = hundredths(&(1..=100).collect::<Vec<_>>());
    let q = [1.0, 0.99, 0.5];
    let pr = recall::pr_curve(&null, &q);
    assert_eq!(pr.len(), 20);
    assert_eq!((pr[0].n_above, pr[0].related_above), (1, 1));
    assert!(close(pr[0].precision, 1.0) && close(pr[0].recall, 1.0 / 3.0));
    assert_eq!((pr[1].n_above, pr[1].related_above), (2, 2));
    assert_eq!(pr[4].n_above, 5);
    assert!(close(pr[4].precision, 2.0 / 5.0));
    assert!(close(
        pr[4].recall,
        recall::recall_one_tailed(&null, &q, 0.95)
    ));
    assert!(close(
        pr[9].recall,
        recall::recall_one_tailed(&null, &q, 0.9)
    ));
    assert_eq!(pr[4].threshold, 0.96);
}

// ---------------------------------------------------------------- IO and CLI

#[test]
fn table_errors_name_file_line_and_column() {
    let p = Path::new("cells.tsv");
    let e = io::parse_table("plate\twell\ttile\tgene\tis_ntc\n", p)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cells.tsv: line 1") && e.contains("`sgRNA`"),
        "{e}"
    );
    let e = io::parse_table(
        "plate\twell\ttile\tgene\tsgRNA\tis_ntc\nP1\tA1\t0\tG\tg1\t1\nP1\tA1\t0\tG\tg1\tmaybe\n",
        p,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cells.tsv: line 3, column 6 (is_ntc)"), "{e}");
    let t = io::parse_table(
        "plate\twell\ttile\tgene\tsgRNA\tis_ntc\nP1\tA1\t0\tG\tg1\t0\n",
        p,
    )
    .unwrap();
    assert_eq!(t.batches.names, vec!["P1_A1"]);
}

fn write_tiny_screen(dir: &Path, genes: usize, batches: usize, cells: usize, d: usize) {
    // Deterministic pseudo-random features: gene signal + batch offset + noise; NTC cells in every batch.
    let mut state = 12345u64;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    };
    let signal: Vec<f64> = (0..genes * d).map(|_| rnd()).collect();
    let offset: Vec<f64> = (0..batches * d).map(|_| rnd()).collect();
    let mut x = Vec::new();
    let mut tsv = String::from("plate\twell\ttile\tgene\tsgRNA\tis_ntc\tcell\n");
    for b in 0..batches {
        for g in 0..=genes {
            let ntc = g == genes;
            for c in 0..cells * if ntc { 3 } else { 1 } {
                let gname = if ntc {
                    "nontargeting".to_string()
                } else {
                    format!("G{g}")
                };
                let sg = if ntc {
                    format!("ntc_{}", c % 2)
                } else {
                    format!("G{g}_{}", c % 2)
                };
                tsv += &format!(
                    "P{}\tW{}\t0\t{gname}\t{sg}\t{}\t{c}\n",
                    b / 2,
                    b % 2,
                    ntc as u8
                );
                for j in 0..d {
                    let s = if ntc { 0.0 } else { signal[g * d + j] };
                    x.push((s + 0.5 * offset[b * d + j] + 0.3 * rnd()) as f32);
                }
            }
        }
    }
    let n = x.len() / d;
    io::write_npy_f32(&dir.join("cells.npy"), &x, n, d).unwrap();
    std::fs::write(dir.join("cells.tsv"), tsv).unwrap();
    let mut cx = String::from("entity1,entity2\n");
    for g in (0..genes.saturating_sub(1)).step_by(3) {
        cx += &format!("G{g},G{}\n", g + 1);
    }
    cx += "G0,NOT_PROFILED\n";
    std::fs::write(dir.join("pairs.csv"), cx).unwrap();
}

#[test]
fn cli_end_to_end_on_a_tiny_table() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_screen(dir.path(), 12, 4, 4, 6);
    let out = dir.path().join("eval");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .args(["eval", "--features"])
        .arg(dir.path().join("cells"))
        .arg("--complexes")
        .arg(dir.path().join("pairs.csv"))
        .arg("--out")
        .arg(&out)
        .args(["--include-ntc", "--dump-profiles", "--quiet"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let mut want = vec![
        "batch_knn5",
        "batch_gc5",
        "repro_knn5",
        "repro_map",
        "recall_top5",
        "recall_top10",
        "recall2_5",
        "recall2_10",
        "pr_auc",
        "ks",
        "cells",
        "genes",
        "batches",
        "profiles",
        "query_pairs",
    ];
    let mut got = keys.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(m["cells"], 4 * (12 * 4 + 12));
    assert_eq!(m["genes"], 12);
    assert_eq!(m["batches"], 4);
    assert_eq!(m["profiles"], 4 * 12 + 4 * 2);
    assert_eq!(m["query_pairs"], 4);
    // Strong gene signal: every gene finds itself across batches.
    assert!(m["repro_map"].as_f64().unwrap() > 0.9, "{m}");
    for k in [
        "batch_knn5",
        "batch_gc5",
        "repro_knn5",
        "recall_top5",
        "recall_top10",
        "pr_auc",
        "ks",
    ] {
        let v = m[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    for f in [
        "report.md",
        "per_gene.tsv",
        "pr_curve.tsv",
        "pr_curve.png",
        "similarity_hist.png",
        "adjacency.png",
        "run.json",
        "profiles/batch_profiles.npy",
        "profiles/batch_profiles.tsv",
        "profiles/consensus_profiles.npy",
        "profiles/consensus_profiles.tsv",
        "profiles/related_pairs.tsv",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    let png = std::fs::read(out.join("pr_curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // The figures' TSVs carry the numbers of metrics.json and run.json.
    use setdino::plot::{adjacency, hist, pr, scatter};
    use setdino::util::tsv;
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).unwrap()).unwrap();
    let prs: Vec<pr::PrRow> = tsv::read(&out.join("pr_curve.tsv")).unwrap();
    assert_eq!(prs.len(), 20);
    for (k, key) in [(5, "recall_top5"), (10, "recall_top10")] {
        let r = prs.iter().find(|r| r.top_percent == k).unwrap();
        assert_eq!(r.recall, m[key].as_f64().unwrap(), "{key}");
        assert_eq!(r.related_pairs, 4);
        assert_eq!(r.null_pairs as u64, run["null_pairs"].as_u64().unwrap());
    }
    let h: Vec<hist::HistRow> = tsv::read(&out.join("similarity_hist.tsv")).unwrap();
    assert_eq!(h.iter().map(|r| r.related_count).sum::<u64>(), 4);
    assert_eq!(
        h.iter().map(|r| r.null_count).sum::<u64>(),
        run["null_pairs"].as_u64().unwrap()
    );
    let area: f64 = h
        .iter()
        .map(|r| r.null_density * (r.bin_hi - r.bin_lo))
        .sum();
    assert!(
        (area - 1.0).abs() < 1e-9,
        "null density integrates to {area}"
    );
    let pca: Vec<scatter::PcaRow> = tsv::read(&out.join("pca.tsv")).unwrap();
    assert_eq!(pca.len() as u64, m["genes"].as_u64().unwrap());
    let genes: Vec<adjacency::GeneRow> = tsv::read(&out.join("adjacency_genes.tsv")).unwrap();
    let pairs: Vec<adjacency::PairRow> = tsv::read(&out.join("adjacency.tsv")).unwrap();
    // Every related pair with both genes profiled is in the picture (4 here, fewer than 400 genes).
    assert_eq!(pairs.iter().filter(|p| p.related == 1).count(), 4);
    assert!(pairs.iter().all(|p| p.i < p.j && p.j < genes.len()));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| batch KNN@5 ↓ |"));
    // The dumped batch profiles reproduce the mAP through the library.
    let f = Features::open(&out.join("profiles/batch_profiles.npy")).unwrap();
    assert_eq!((f.n, f.d), (56, 6));
    let per_gene = std::fs::read_to_string(out.join("per_gene.tsv")).unwrap();
    assert_eq!(per_gene.lines().count(), 13);
    // pairs.tsv: one line per query pair; its top-5 % / 10 % flags give metrics.json's recalls.
    let pairs = std::fs::read_to_string(out.join("pairs.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = pairs
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(rows.len(), 4);
    for (col, key) in [(4, "recall_top5"), (5, "recall_top10")] {
        let hits = rows.iter().filter(|r| r[col] == "1").count() as f64;
        assert_eq!(hits / rows.len() as f64, m[key].as_f64().unwrap(), "{key}");
    }
}

#[test]
fn cli_reports_missing_files_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_screen(dir.path(), 3, 2, 2, 2);
    let run = |extra: &[&str], feats: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
            .args(["eval", "--quiet", "--features"])
            .arg(dir.path().join(feats))
            .arg("--complexes")
            .arg(dir.path().join("pairs.csv"))
            .arg("--out")
            .arg(dir.path().join("o"))
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[], "nothere");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothere.tsv"));
    let o = run(&["--normalize", "quantile"], "cells");
    assert!(String::from_utf8_lossy(&o.stderr).contains("zscore, robust, center, none"));
    let o = run(&["--pca", "1.5"], "cells");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pca 1.5"));
    let o = run(&["--normalize", "robust", "--level", "sgrna"], "cells");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The scale of evaluation.md §5: 5 000 genes × 6 batches = 30 000 profiles (+ NTC), 12.5 M gene pairs.
#[test]
#[ignore]
fn scale_30k_profiles_5k_genes() {
    let dir = tempfile::tempdir().unwrap();
    let d: usize = std::env::var("SCALE_DIM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let t = std::time::Instant::now();
    write_tiny_screen(dir.path(), 5000, 6, 2, d);
    eprintln!("generated in {:.1}s (d = {d})", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let opts = setdino::eval::EvalOptions {
        features: dir.path().join("cells"),
        complexes: dir.path().join("pairs.csv"),
        out: dir.path().join("eval"),
        normalize: Method::Zscore,
        pca: None,
        level: Level::Gene,
        include_ntc: false,
        dump_profiles: None,
        dump_format: Default::default(),
        verbose: true,
        figures: Default::default(),
        store: None,
    };
    let m = setdino::eval::run(&opts).unwrap();
    eprintln!(
        "eval of {} profiles, {} genes: {:.1}s\n{m:?}",
        m.profiles,
        m.genes,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(m.profiles, 30000);
    assert_eq!(m.genes, 5000);
}

/// Runs `setdino eval` with `args`; panics with its stderr when it fails.
fn eval_cli(args: &[&std::ffi::OsStr]) {
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn eval_reads_parquet_and_anndata_features_and_dumps_them_alike() {
    use setdino::formats::{frame::Frame, frame::Values, write_matrix, Format};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_tiny_screen(d, 9, 4, 3, 5);
    // The same table and matrix as Parquet and as an AnnData store (as `embed --format` writes them).
    let text = std::fs::read_to_string(d.join("cells.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let col = |k: usize| rows.iter().map(|r| r[k].to_string()).collect::<Vec<_>>();
    let mut fr = Frame::default();
    fr.push(
        "cell",
        Values::I64((0..rows.len()).map(|k| k as i64).collect()),
    );
    for (k, name) in ["plate", "well", "tile", "gene", "sgRNA"]
        .iter()
        .enumerate()
    {
        fr.push(name, Values::Str(col(k)));
    }
    fr.push(
        "is_ntc",
        Values::Bool(col(5).iter().map(|v| v == "1").collect()),
    );
    let bytes = std::fs::read(d.join("cells.npy")).unwrap();
    let h = setdino::store::npy::parse_header(&bytes, &d.join("cells.npy")).unwrap();
    let x: Vec<f32> = bytes[h.data_offset..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let names = setdino::formats::numbered("f", 5);
    for f in [Format::Parquet, Format::Anndata] {
        write_matrix(
            &d.join("cells"),
            f,
            fr.clone(),
            &names,
            serde_json::json!({}),
            &x,
        )
        .unwrap();
    }
    let pairs = d.join("pairs.csv");
    let mut metrics = Vec::new();
    for (stem, fmt) in [
        ("cells", "npy"),
        ("cells.parquet", "parquet"),
        ("cells.zarr", "anndata"),
    ] {
        let out = d.join(format!("eval_{fmt}"));
        let features = d.join(stem);
        let args = [
            "--features".as_ref(),
            features.as_os_str(),
            "--complexes".as_ref(),
            pairs.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
            "--quiet".as_ref(),
            "--dump-profiles".as_ref(),
            "--format".as_ref(),
            fmt.as_ref(),
        ];
        eval_cli(&args);
        metrics.push(std::fs::read_to_string(out.join("metrics.json")).unwrap());
    }
    assert_eq!(
        metrics[0], metrics[1],
        "Parquet features: same metrics as npy"
    );
    assert_eq!(
        metrics[0], metrics[2],
        "AnnData features: same metrics as npy"
    );
    // The dumped consensus profiles agree across the three formats.
    let npy = std::fs::read(d.join("eval_npy/profiles/consensus_profiles.npy")).unwrap();
    let h = setdino::store::npy::parse_header(&npy, Path::new("c.npy")).unwrap();
    let want: Vec<f32> = npy[h.data_offset..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let p = setdino::formats::parquet::read(
        &d.join("eval_parquet/profiles/consensus_profiles.parquet"),
    )
    .unwrap();
    assert_eq!(p.features, want);
    assert_eq!(p.header, vec!["gene", "n_batches"]);
    let a =
        setdino::formats::anndata::read(&d.join("eval_anndata/profiles/consensus_profiles.zarr"))
            .unwrap();
    assert_eq!(a.x, want);
    assert_eq!(
        a.obs_index,
        p.rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
}
