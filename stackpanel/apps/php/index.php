<?php
// The PHP page of the nginx-php-uvicorn profile: Apache hands it to php-fpm, nginx sends /api to uvicorn.
declare(strict_types=1);
header('Content-Type: text/html; charset=utf-8');
$now = microtime(true);
$pid = getmypid();
?>
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>stackpanel: PHP behind Apache</title></head>
<body>
<h1>PHP behind Apache</h1>
<p>PHP <?= htmlspecialchars(PHP_VERSION) ?> (<?= htmlspecialchars(PHP_SAPI) ?>), worker pid
<span id="pid"><?= $pid ?></span>, rendered at <span id="now"><?= sprintf('%.6f', $now) ?></span>.</p>
<p>Request id: <code><?= htmlspecialchars($_SERVER['HTTP_X_REQUEST_ID'] ?? '-') ?></code></p>
<p>The API is one hop away: <a href="/api/hello">/api/hello</a> (uvicorn).</p>
</body>
</html>
