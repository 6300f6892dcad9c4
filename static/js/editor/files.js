// Graphs in files: a PNG from this server or InvokeAI (its `invokeai_graph` text chunk, and our
// `imagegraph_workflow` chunk with the drawing), a graph JSON (what POST /sessions/ takes) or a workflow JSON
// (what the editor exports and POST /workflows/ takes). PNG text chunks are read here in the browser: the
// file never has to be uploaded to be opened.

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Every text chunk of a PNG (tEXt, zTXt, iTXt) as {keyword: text}; null when the bytes are not a PNG. */
export async function pngTextChunks(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || PNG_SIGNATURE.some((b, i) => bytes[i] !== b)) return null;
  const view = new DataView(buffer);
  const chunks = {};
  let offset = 8;
  while (offset + 12 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    offset += 12 + length;
    if (type === "IEND") break;
    const nul = data.indexOf(0);
    if (nul < 1) continue;
    const keyword = latin1.decode(data.subarray(0, nul));
    try {
      if (type === "tEXt") chunks[keyword] = latin1.decode(data.subarray(nul + 1));
      else if (type === "zTXt") chunks[keyword] = latin1.decode(await inflate(data.subarray(nul + 2)));
      else if (type === "iTXt") {
        const compressed = data[nul + 1] === 1;
        let at = data.indexOf(0, nul + 3); // language tag
        at = data.indexOf(0, at + 1); // translated keyword
        const text = data.subarray(at + 1);
        chunks[keyword] = utf8.decode(compressed ? await inflate(text) : text);
      }
    } catch {
      // A damaged chunk loses only itself.
    }
  }
  return chunks;
}

function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`${what} is not valid JSON.`);
  }
}

function isGraph(value) {
  return value && typeof value === "object" && value.nodes && typeof value.nodes === "object" && !Array.isArray(value.nodes);
}

/**
 * What a dropped or chosen file holds: {graph, layout, name, description, workflowId, source}. Throws an
 * Error whose message a person can act on.
 */
export async function readGraphFile(file) {
  const buffer = await file.arrayBuffer();
  const chunks = await pngTextChunks(buffer);
  if (chunks) {
    if (!chunks.invokeai_graph) {
      throw new Error(`${file.name} carries no graph (no invokeai_graph chunk): only images made by a graph can be opened.`);
    }
    const graph = parseJson(chunks.invokeai_graph, `The graph in ${file.name}`);
    if (!isGraph(graph)) throw new Error(`The graph in ${file.name} has no nodes.`);
    const workflow = chunks.imagegraph_workflow ? parseJson(chunks.imagegraph_workflow, `The workflow in ${file.name}`) : null;
    return {
      graph,
      layout: workflow?.layout ?? null,
      name: workflow?.name ?? null,
      workflowId: workflow?.id ?? null,
      source: `image ${file.name}`,
    };
  }
  const data = parseJson(utf8.decode(buffer), file.name);
  if (isGraph(data?.graph)) {
    return { graph: data.graph, layout: data.layout ?? null, name: data.name ?? null, description: data.description ?? "", source: file.name };
  }
  if (isGraph(data)) return { graph: data, layout: null, name: null, source: file.name };
  throw new Error(`${file.name} is neither a graph ({"nodes", "edges"}) nor a workflow ({"name", "graph", "layout"}).`);
}

/** Offer `workflow` ({name, description, graph, layout}) as a JSON download. */
export function downloadJson(workflow, fileName) {
  const blob = new Blob([JSON.stringify(workflow, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = fileName;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function fileNameFor(name) {
  const base = (name || "workflow").replace(/[^\p{L}\p{N} _.-]+/gu, "").trim().replace(/\s+/g, "-") || "workflow";
  return `${base}.json`;
}
