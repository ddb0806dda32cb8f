"""The demo spider (`scraper crawl demo`), the one `scraper demo` runs: shipped in the
package (`scraper.demo`), so it works wherever scraper is installed."""

from scraper.demo import demo_spider


class DemoCatalogue(demo_spider()):  # type: ignore[misc]
    name = "demo"
