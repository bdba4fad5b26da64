//! Graph connectivity GC@k (evaluation.md §2): the kNN graph made undirected, restricted to each batch,
//! largest connected component over batch size, averaged over batches.
//!
//! Key decision: union–find over the same-batch edges only (an edge between two batches never joins a
//! component of either), which equals scib's per-label `connected_components(connection="strong")` on
//! the symmetric scanpy connectivities.
use super::knn::Neighbors;

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        parent[i as usize] = parent[parent[i as usize] as usize];
        i = parent[i as usize];
    }
    i
}

/// GC = mean over labels present of |largest component of the label's induced subgraph| / |label's
/// nodes|; label: (n). Returns (GC, per-label fraction in label-id order, NaN for absent labels).
pub fn graph_connectivity(nb: &Neighbors, label: &[u32], n_labels: usize) -> (f64, Vec<f64>) {
    let n = label.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for (i, list) in nb.lists.iter().enumerate() {
        for &(j, _) in list {
            if label[j as usize] == label[i] {
                let (a, b) = (find(&mut parent, i as u32), find(&mut parent, j));
                if a != b {
                    parent[a.max(b) as usize] = a.min(b);
                }
            }
        }
    }
    let mut comp_size = vec![0usize; n];
    let mut label_size = vec![0usize; n_labels];
    for i in 0..n {
        let r = find(&mut parent, i as u32);
        comp_size[r as usize] += 1;
        label_size[label[i] as usize] += 1;
    }
    let mut largest = vec![0usize; n_labels];
    for i in 0..n {
        if parent[i] == i as u32 {
            let l = label[i] as usize;
            largest[l] = largest[l].max(comp_size[i]);
        }
    }
    let per: Vec<f64> = (0..n_labels)
        .map(|l| {
            if label_size[l] == 0 {
                f64::NAN
            } else {
                largest[l] as f64 / label_size[l] as f64
            }
        })
        .collect();
    let present: Vec<f64> = per.iter().copied().filter(|v| !v.is_nan()).collect();
    let gc = if present.is_empty() {
        f64::NAN
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    };
    (gc, per)
}
