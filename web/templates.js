// The Templates browser's cards for this pack's templates: each card's description line says what the template
// does and what it needs (web/templates.json, written by scripts/build_workflows.py), instead of repeating its title.
// Frontend 1.47 builds a custom node pack's cards from the file names alone (Comfy-Org/ComfyUI_frontend#13462), so
// the line is set here, on the cards as they are drawn; nothing else of the dialog changes.
import { app } from "../../scripts/app.js";

const CARDS_URL = new URL("./templates.json", import.meta.url);

app.registerExtension({
  name: "Magic141.TemplateCards",
  async setup() {
    const cards = await (await fetch(CARDS_URL)).json(); // {title: one-line description}
    const describe = () => {
      for (const [title, text] of Object.entries(cards)) {
        const selector = `[data-testid="template-workflow-${CSS.escape(title)}"] p`;
        for (const line of document.querySelectorAll(selector)) {
          if (line.textContent !== text) {
            line.textContent = text;
            line.title = text;
          }
        }
      }
    };
    new MutationObserver(describe).observe(document.body, { childList: true, subtree: true });
  },
});
