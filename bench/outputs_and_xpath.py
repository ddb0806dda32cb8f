"""Items/s written by each output format and compression, and the cost of `xpath()`
beside `css()` on a demo product page.

    python bench/outputs_and_xpath.py [--items 200000]

No server: exporters write to a temporary directory; selectors run on in-memory pages.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from scraper.demo import build_site
from scraper.exporters import Exporter
from scraper.testing import make_response


def bench_outputs(items: int) -> None:
    rows = [{"url": f"http://127.0.0.1:8082/p/{i}", "name": f"Product {i}",
             "price": (i * 37) % 500 + 0.99, "sku": f"SKU-{i:05d}", "tags": ["new", "sale"]}
            for i in range(items)]
    print(f"{'output':<18}{'items/s':>12}{'bytes/item':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("items.jsonl", "items.jsonl.gz", "items.jsonl.zst", "items.csv",
                     "items.csv.gz", "items.csv.zst", "items.json"):
            path = Path(tmp) / name
            exporter = Exporter(str(path))
            started = time.perf_counter()
            for row in rows:
                exporter.write(row)
            exporter.finalise()
            elapsed = time.perf_counter() - started
            size = path.stat().st_size
            print(f"{name:<18}{items / elapsed:>12,.0f}{size / items:>12.1f}")


def bench_selectors(pages: int) -> None:
    bodies = list(build_site(300).items())[-pages:]

    def run(select: str) -> float:
        started = time.perf_counter()
        for path, body in bodies:
            response = make_response(body, url=f"http://127.0.0.1:8082{path}")
            if select == "css":
                response.css_first("article.product h1").text()
                [node.attributes.get("href") for node in response.css("a[href]")]
            else:
                response.xpath("//article[@class='product']/h1/text()").get()
                response.xpath("//a/@href").getall()
        return (time.perf_counter() - started) / len(bodies) * 1e6

    run("xpath")  # imports parsel once, outside the timing
    for select in ("css", "xpath"):
        print(f"{select:<6} parse + 2 selections: {run(select):8.1f} µs per page")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    bench_outputs(args.items)
    bench_selectors(args.pages)


if __name__ == "__main__":
    main()
