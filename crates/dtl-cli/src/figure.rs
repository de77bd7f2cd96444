//! Figures as standalone SVG, written by hand so that no plotting stack is needed, and their
//! rasterisation to PNG. The figures themselves sit with what they draw (`yosinski::figure`).

/// Rasterises an SVG written by dtl to PNG at `scale` (1 = the SVG's size in pixels), with
/// the system's fonts for the text. A machine without fonts gets the figure without its labels.
pub fn svg_to_png(svg: &str, scale: f32) -> Result<Vec<u8>, String> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // The figures ask for `sans-serif`; usvg maps it to Arial, which Linux machines rarely have.
    let families: Vec<String> = db
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.clone()))
        .collect();
    let sans = [
        "DejaVu Sans",
        "Liberation Sans",
        "Arial",
        "Helvetica",
        "Noto Sans",
    ]
    .iter()
    .map(|s| s.to_string())
    .find(|c| families.contains(c))
    .or_else(|| families.first().cloned());
    if let Some(sans) = sans {
        db.set_sans_serif_family(sans);
    }
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("figure: {e}"))?;
    let size = tree.size();
    let (w, h) = (
        ((size.width() * scale).ceil() as u32).max(1),
        ((size.height() * scale).ceil() as u32).max(1),
    );
    let mut pixmap = tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("figure: no {w}x{h} canvas"))?;
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| format!("figure: {e}"))
}
